//! Tokens this execution environment has seen rejected upstream recently:
//! skipped when choosing from the deployment's tokens, for `memory`.

use std::time::Duration;

use moka::sync::Cache;

pub struct DeadTokens {
    seen: Cache<String, ()>,
    memory: Duration,
}

impl DeadTokens {
    pub fn new(memory: Duration) -> Self {
        Self {
            seen: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(memory)
                .build(),
            memory,
        }
    }

    pub fn memory(&self) -> Duration {
        self.memory
    }

    pub fn remember(&self, fingerprint: &str) {
        self.seen.insert(fingerprint.to_string(), ());
    }

    pub fn contains(&self, fingerprint: &str) -> bool {
        self.seen.contains_key(fingerprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_for_a_while() {
        let d = DeadTokens::new(Duration::from_millis(50));
        d.remember("ab12cd34");
        assert!(d.contains("ab12cd34") && !d.contains("other000"));
        std::thread::sleep(Duration::from_millis(120));
        assert!(!d.contains("ab12cd34"));
    }
}
