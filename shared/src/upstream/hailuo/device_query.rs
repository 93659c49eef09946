//! The device query string every call carries (protocol section 2).

use super::config::DeviceProfile;
use crate::upstream::query_string::{append_query, join_query, unix_ms};

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
}
