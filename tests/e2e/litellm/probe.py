"""One chat completion through LiteLLM's OpenAI-compatible provider against
the gateway, printing the exception class LiteLLM raised (or "ok") as JSON.

Run by tests/e2e/python/test_litellm.py with LiteLLM's own virtualenv:
    probe.py BASE_URL KEY [EXTRA_JSON]
"""

import json
import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")

import litellm  # noqa: E402

base, key = sys.argv[1], sys.argv[2]
extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
try:
    r = litellm.completion(model="openai/gpt-4o", api_base=f"{base}/v1", api_key=key, max_retries=0,
                           messages=[{"role": "user", "content": "hi"}], **extra)
    print(json.dumps({"class": "ok", "text": r.choices[0].message.content}))
except Exception as e:  # noqa: BLE001 - the class is what is reported
    print(json.dumps({"class": type(e).__name__, "status": getattr(e, "status_code", None), "message": str(e)}))
