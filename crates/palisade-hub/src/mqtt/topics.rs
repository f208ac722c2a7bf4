//! Topic authorisation for devices (ACC-2, DESIGN.md invariant 6): a device publishes
//! only to `devices/{its id}/telemetry`, `…/events`, `…/state` and
//! `…/certificate/csr` (renewal), and subscribes only
//! to filters strictly under `devices/{its id}/` — never a wildcard at or above its id
//! level, never a shared subscription. The hub publishes commands on
//! `devices/{id}/commands` to a device (and release offers on `devices/{id}/update`;
//! devices report install steps on `devices/{id}/update/status`) whose subscriptions cover it ([`filter_matches`]).
//! Pure functions, so the rules are unit-tested here.

use crate::ids::DeviceId;

/// What a device may publish to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnTopic {
    /// Validated against the product model and stored (DATA-1).
    Telemetry,
    Events,
    State,
    /// `devices/{id}/certificate/csr`: a certificate renewal request (PEM CSR).
    CertificateCsr,
    /// `devices/{id}/update/status`: an install step of an offered release (issue 4).
    UpdateStatus,
}

/// The topics of one device.
#[derive(Debug, Clone)]
pub struct DeviceTopics {
    /// `devices/{id}/`
    prefix: String,
}

impl DeviceTopics {
    pub fn new(device: &DeviceId) -> Self {
        Self {
            prefix: format!("devices/{device}/"),
        }
    }

    /// Which of the device's own topics `topic` is, or `None` when the device may not
    /// publish there.
    pub fn publish(&self, topic: &str) -> Option<OwnTopic> {
        match topic.strip_prefix(self.prefix.as_str())? {
            "telemetry" => Some(OwnTopic::Telemetry),
            "events" => Some(OwnTopic::Events),
            "state" => Some(OwnTopic::State),
            "certificate/csr" => Some(OwnTopic::CertificateCsr),
            "update/status" => Some(OwnTopic::UpdateStatus),
            _ => None,
        }
    }

    /// `devices/{id}/commands`: where the hub sends the device its commands.
    pub fn commands(&self) -> String {
        format!("{}commands", self.prefix)
    }

    /// `devices/{id}/update`: where the hub offers a release.
    pub fn update(&self) -> String {
        format!("{}update", self.prefix)
    }

    /// `devices/{id}/config`: where the hub sends the device's telemetry settings
    /// (`{"disabled_fields": [...]}`, PRIV-3).
    pub fn config(&self) -> String {
        format!("{}config", self.prefix)
    }

    /// `devices/{id}/certificate`: where the hub sends a renewed certificate.
    pub fn certificate(&self) -> String {
        format!("{}certificate", self.prefix)
    }

    /// The last part of one of the device's topics (`telemetry`, `state`, …).
    pub fn leaf<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic.strip_prefix(self.prefix.as_str())
    }

    /// Whether the device may publish to `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish(topic).is_some()
    }

    /// Whether the device may subscribe to `filter`: a well-formed filter with at least
    /// one level below `devices/{id}/` and wildcards only there.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        let Some(rest) = filter.strip_prefix(self.prefix.as_str()) else {
            return false;
        };
        if rest.is_empty() || filter.contains('\0') {
            return false;
        }
        let levels: Vec<&str> = rest.split('/').collect();
        let last = levels.len() - 1;
        levels.iter().enumerate().all(|(i, level)| match *level {
            "+" => true,
            "#" => i == last,
            other => !other.contains(['+', '#']),
        })
    }
}

/// Whether the MQTT topic filter `filter` matches the topic name `topic` (`+` one
/// level, `#` the rest, including the parent level).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            exact => {
                if topic_levels.next() != Some(exact) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_topics_as_mqtt_says() {
        let t = "devices/abc/commands";
        for yes in [
            "devices/abc/commands",
            "devices/abc/+",
            "devices/abc/#",
            "devices/+/commands",
            "#",
            "devices/abc/commands/#",
        ] {
            assert!(filter_matches(yes, t), "{yes}");
        }
        for no in [
            "devices/abc/command",
            "devices/abc/commands/x",
            "devices/abc/+/x",
            "devices/abc",
            "devices/abd/#",
            "devices/abc/commands/+",
        ] {
            assert!(!filter_matches(no, t), "{no}");
        }
    }

    #[test]
    fn acc2_a_device_publishes_only_on_its_own_topics() {
        let a = DeviceId::generate();
        let b = DeviceId::generate();
        let topics = DeviceTopics::new(&a);
        assert_eq!(
            topics.publish(&format!("devices/{a}/telemetry")),
            Some(OwnTopic::Telemetry)
        );
        assert_eq!(
            topics.publish(&format!("devices/{a}/events")),
            Some(OwnTopic::Events)
        );
        assert_eq!(
            topics.publish(&format!("devices/{a}/state")),
            Some(OwnTopic::State)
        );
        assert_eq!(
            topics.publish(&format!("devices/{a}/certificate/csr")),
            Some(OwnTopic::CertificateCsr)
        );
        for forbidden in [
            format!("devices/{b}/telemetry"),
            format!("devices/{b}/certificate/csr"),
            format!("devices/{a}/certificate"),
            format!("devices/{a}/commands"),
            format!("devices/{a}/telemetry/x"),
            format!("devices/{a}"),
            format!("devices/{a}/"),
            format!("/devices/{a}/telemetry"),
            format!("Devices/{a}/telemetry"),
            "devices/+/telemetry".to_owned(),
            "#".to_owned(),
            String::new(),
        ] {
            assert!(!topics.may_publish(&forbidden), "{forbidden}");
        }
    }

    #[test]
    fn acc2_a_device_subscribes_only_under_its_own_id() {
        let a = DeviceId::generate();
        let b = DeviceId::generate();
        let topics = DeviceTopics::new(&a);
        for allowed in [
            format!("devices/{a}/commands"),
            format!("devices/{a}/#"),
            format!("devices/{a}/+"),
            format!("devices/{a}/commands/+/x"),
        ] {
            assert!(topics.may_subscribe(&allowed), "{allowed}");
        }
        for forbidden in [
            "#".to_owned(),
            "+/#".to_owned(),
            "devices/#".to_owned(),
            "devices/+/commands".to_owned(),
            "devices/+/telemetry".to_owned(),
            format!("devices/{b}/commands"),
            format!("devices/{a}"),
            format!("devices/{a}/"),
            format!("devices/{a}/#/x"),
            format!("devices/{a}/com+"),
            format!("devices/{a}/x#"),
            format!("$share/g/devices/{a}/commands"),
            format!("devices/{a}+/commands"),
        ] {
            assert!(!topics.may_subscribe(&forbidden), "{forbidden}");
        }
    }
}
