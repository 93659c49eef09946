//! Which model a request is sent to (protocol section 2.1): a configured
//! name goes as it is; LiteLLM's `-lightning` names become MiniMax's
//! `-highspeed`; anything else (a gateway name, a retired model, `gpt-4o`)
//! becomes the default. Images go to a model that takes them.

use super::config::ApiConfig;

/// The name to send for `asked`, `images` when the request carries some.
pub(crate) fn resolve<'a>(config: &'a ApiConfig, asked: &str, images: bool) -> &'a str {
    let known = |name: &str| {
        config
            .chat_models
            .iter()
            .find(|m| m.eq_ignore_ascii_case(name))
    };
    let chosen = known(asked)
        .or_else(|| {
            let stem = asked.strip_suffix("-lightning")?;
            known(&format!("{stem}-highspeed"))
        })
        .map_or(config.chat_model.as_str(), String::as_str);
    if images && !takes_images(chosen) {
        return &config.vision_model;
    }
    chosen
}

/// Only the M3 family takes images (and video) as input.
pub(crate) fn takes_images(model: &str) -> bool {
    model.starts_with("MiniMax-M3")
}

/// `thinking: {"type":"disabled"}` exists on exactly `MiniMax-M3` (2.4).
pub(crate) fn can_stop_thinking(model: &str) -> bool {
    model == "MiniMax-M3"
}

/// A temperature the model takes (2.2): M3 [0, 2]; M2.x (0, 1], where an
/// out-of-range value is an error, so 0 becomes 0.01 and more than 1 is 1.
pub(crate) fn temperature(model: &str, asked: f64) -> f64 {
    if model.starts_with("MiniMax-M3") {
        asked.clamp(0.0, 2.0)
    } else {
        asked.clamp(0.01, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::api::config::tests::config;

    #[test]
    fn names_pass_through_are_rewritten_or_replaced() {
        let c = config(&[]);
        assert_eq!(resolve(&c, "MiniMax-M2.7", false), "MiniMax-M2.7");
        assert_eq!(resolve(&c, "minimax-m2.7", false), "MiniMax-M2.7");
        assert_eq!(
            resolve(&c, "MiniMax-M2.5-lightning", false),
            "MiniMax-M2.5-highspeed"
        );
        for retired in [
            "MiniMax-M1",
            "MiniMax-Text-01",
            "abab6.5s-chat",
            "gpt-4o",
            "",
        ] {
            assert_eq!(resolve(&c, retired, false), "MiniMax-M3", "{retired}");
        }
        // Images on a text-only model go to the vision model.
        assert_eq!(resolve(&c, "MiniMax-M2.7", true), "MiniMax-M3");
        assert!(
            can_stop_thinking("MiniMax-M3") && !can_stop_thinking("MiniMax-M3.1-Flash-Preview")
        );
    }
}
