//! Reading settings (the environment, or a test's map). Imports nothing of
//! ours, so each adapter can build its own configuration from it.

use std::time::Duration;

/// Reads settings from a lookup (the environment, or a test's map). Values are
/// trimmed and blank ones count as unset; numbers that do not parse fall back
/// to the default.
pub struct Lookup<'a>(&'a dyn Fn(&str) -> Option<String>);

fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

impl Lookup<'static> {
    /// The process environment.
    pub fn env() -> Self {
        Self(&process_env)
    }
}

impl<'a> Lookup<'a> {
    pub fn new(get: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self(get)
    }

    /// The value, if set.
    pub fn value(&self, key: &str) -> Option<String> {
        (self.0)(key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    pub fn text(&self, key: &str, default: &str) -> String {
        self.value(key).unwrap_or_else(|| default.to_string())
    }

    pub fn number(&self, key: &str, default: u64) -> u64 {
        self.value(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    pub fn millis(&self, key: &str, default: u64) -> Duration {
        Duration::from_millis(self.number(key, default))
    }

    /// `1`, `true` or `yes` (any case).
    pub fn flag(&self, key: &str) -> bool {
        self.value(key)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
    }
}

/// What `build` makes of these settings (tests: a configuration from pairs).
#[cfg(test)]
pub(crate) fn from_pairs<T>(pairs: &[(&str, &str)], build: impl FnOnce(&Lookup) -> T) -> T {
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.to_string())
    };
    build(&Lookup::new(&get))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_trims_and_falls_back() {
        let get = |k: &str| match k {
            "BLANK" => Some("  ".to_string()),
            "N" => Some(" 42 ".to_string()),
            "BAD" => Some("x".to_string()),
            "F" => Some("Yes".to_string()),
            _ => None,
        };
        let env = Lookup::new(&get);
        assert_eq!(env.value("BLANK"), None);
        assert_eq!(env.text("BLANK", "d"), "d");
        assert_eq!(env.number("N", 1), 42);
        assert_eq!(env.number("BAD", 1), 1);
        assert_eq!(env.millis("N", 1), Duration::from_millis(42));
        assert!(env.flag("F") && !env.flag("N") && !env.flag("MISSING"));
    }
}
