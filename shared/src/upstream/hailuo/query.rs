//! The device query string every call carries (protocol section 2).

use crate::config::Lookup;
use crate::upstream::query::{append_query, join_query, unix_ms};

/// The browser fingerprint the query describes. Every value may drift upstream,
/// so each is configuration (`HAILUO_*` variables) with the observed default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceProfile {
    pub device_platform: String,
    pub app_id: String,
    pub version_code: String,
    pub os_name: String,
    pub browser_name: String,
    pub device_memory: String,
    pub cpu_core_num: String,
    pub browser_language: String,
    pub browser_platform: String,
    pub screen_width: String,
    pub screen_height: String,
}

impl Default for DeviceProfile {
    fn default() -> Self {
        Self {
            device_platform: "web".into(),
            app_id: "3001".into(),
            version_code: "22200".into(),
            os_name: "Windows".into(),
            browser_name: "chrome".into(),
            device_memory: "8".into(),
            cpu_core_num: "12".into(),
            browser_language: "zh-CN".into(),
            browser_platform: "Win32".into(),
            screen_width: "1920".into(),
            screen_height: "1080".into(),
        }
    }
}

impl DeviceProfile {
    /// The defaults, each overridable by a `HAILUO_*` setting.
    pub fn from_lookup(env: &Lookup<'_>) -> Self {
        let d = Self::default();
        let pick = |key: &str, default: String| env.value(key).unwrap_or(default);
        Self {
            device_platform: pick("HAILUO_DEVICE_PLATFORM", d.device_platform),
            app_id: pick("HAILUO_APP_ID", d.app_id),
            version_code: pick("HAILUO_VERSION_CODE", d.version_code),
            os_name: pick("HAILUO_OS_NAME", d.os_name),
            browser_name: pick("HAILUO_BROWSER_NAME", d.browser_name),
            device_memory: pick("HAILUO_DEVICE_MEMORY", d.device_memory),
            cpu_core_num: pick("HAILUO_CPU_CORE_NUM", d.cpu_core_num),
            browser_language: pick("HAILUO_BROWSER_LANGUAGE", d.browser_language),
            browser_platform: pick("HAILUO_BROWSER_PLATFORM", d.browser_platform),
            screen_width: pick("HAILUO_SCREEN_WIDTH", d.screen_width),
            screen_height: pick("HAILUO_SCREEN_HEIGHT", d.screen_height),
        }
    }
}

/// One call's query: the profile plus the device identity and the time.
#[derive(Clone, Debug)]
pub struct DeviceQuery(String);

impl DeviceQuery {
    pub fn new(profile: &DeviceProfile, uuid: &str, device_id: Option<&str>, unix: &str) -> Self {
        let p = profile;
        let pairs: [(&str, Option<&str>); 14] = [
            ("device_platform", Some(&p.device_platform)),
            ("app_id", Some(&p.app_id)),
            ("version_code", Some(&p.version_code)),
            ("uuid", Some(uuid)),
            ("device_id", device_id),
            ("os_name", Some(&p.os_name)),
            ("browser_name", Some(&p.browser_name)),
            ("device_memory", Some(&p.device_memory)),
            ("cpu_core_num", Some(&p.cpu_core_num)),
            ("browser_language", Some(&p.browser_language)),
            ("browser_platform", Some(&p.browser_platform)),
            ("screen_width", Some(&p.screen_width)),
            ("screen_height", Some(&p.screen_height)),
            ("unix", Some(unix)),
        ];
        Self(join_query(&pairs))
    }

    /// `path?query`, or `path?existing&query` when the path has a query already.
    pub fn append_to(&self, path: &str) -> String {
        append_query(path, &self.0)
    }
}

/// Current time in milliseconds, rounded down to the whole second.
pub fn unix_now_rounded() -> String {
    ((unix_ms() / 1000) * 1000).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_order_and_device_id_left_out_when_unknown() {
        let q = DeviceQuery::new(&DeviceProfile::default(), "u1", None, "1000");
        assert_eq!(
            q.append_to("/p"),
            "/p?device_platform=web&app_id=3001&version_code=22200&uuid=u1&os_name=Windows&browser_name=chrome&device_memory=8&cpu_core_num=12&browser_language=zh-CN&browser_platform=Win32&screen_width=1920&screen_height=1080&unix=1000"
        );
        let q = DeviceQuery::new(&DeviceProfile::default(), "u1", Some("42"), "1000");
        assert!(q.append_to("/p?msgID=1").starts_with("/p?msgID=1&device_platform=web&app_id=3001&version_code=22200&uuid=u1&device_id=42&os_name"));
    }

    #[test]
    fn unix_ends_in_000() {
        let u = unix_now_rounded();
        assert!(u.ends_with("000") && u.len() >= 13, "{u}");
    }

    #[test]
    fn profile_overrides_from_env() {
        let p = DeviceProfile::from_lookup(&Lookup::new(&|k| {
            (k == "HAILUO_VERSION_CODE").then(|| "23000".to_string())
        }));
        assert_eq!(p.version_code, "23000");
        assert_eq!(p.app_id, "3001");
    }
}
