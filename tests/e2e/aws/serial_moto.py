"""moto's server with its requests handled one at a time.

moto does not make DynamoDB's conditional writes atomic under concurrency
(measured: with 8 concurrent writers, two conditional updates of one item both
succeeded about once in 30 rounds), which DynamoDB itself never allows. The
shared pool's contention tests would then flake through no fault of the
gateway, so every request goes through one lock here: the reference for
atomicity is DynamoDB's documented conditional-write semantics, which a
serialized moto keeps. Otherwise this is `moto_server -H HOST -p PORT`.
"""

import argparse
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import MotoRequestHandler
from werkzeug.serving import run_simple


class Serialized:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            # The whole body is produced under the lock (moto's answers are small).
            return [b"".join(self.app(environ, start_response))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, Serialized(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
