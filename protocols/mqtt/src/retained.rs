//! Retained messages: the last retained PUBLISH per topic, handed to every
//! new matching subscription (wildcard filters included). Kept in memory
//! only for now: they do not survive a broker restart.

use crate::topic;
use bytes::Bytes;
use mqttbytes::QoS;
use parking_lot::Mutex;
use std::collections::BTreeMap;

/// One retained message.
#[derive(Debug, Clone)]
pub(crate) struct Retained {
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
}

/// Retained messages by topic, per vhost.
#[derive(Debug, Default)]
pub(crate) struct RetainedStore {
    by_topic: Mutex<BTreeMap<(String, String), Retained>>,
}

impl RetainedStore {
    /// Store (or with an empty payload, clear) the retained message of
    /// `topic` in `vhost`.
    pub(crate) fn put(&self, vhost: &str, topic: &str, payload: Bytes, qos: QoS) {
        let key = (vhost.to_owned(), topic.to_owned());
        let mut map = self.by_topic.lock();
        if payload.is_empty() {
            map.remove(&key);
        } else {
            map.insert(key, Retained { payload, qos });
        }
    }

    /// Retained messages of `vhost` whose topic matches `filter`.
    pub(crate) fn matching(&self, vhost: &str, filter: &str) -> Vec<(String, Retained)> {
        let map = self.by_topic.lock();
        map.range((vhost.to_owned(), String::new())..)
            .take_while(|((v, _), _)| v == vhost)
            .filter(|((_, t), _)| topic::matches(filter, t))
            .map(|((_, t), r)| (t.clone(), r.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_match_clear() {
        let s = RetainedStore::default();
        s.put("/", "a/b", Bytes::from_static(b"1"), QoS::AtLeastOnce);
        s.put("/", "a/c", Bytes::from_static(b"2"), QoS::AtMostOnce);
        s.put("other", "a/b", Bytes::from_static(b"3"), QoS::AtMostOnce);
        assert_eq!(s.matching("/", "a/+").len(), 2);
        assert_eq!(
            s.matching("/", "a/b")[0].1.payload,
            Bytes::from_static(b"1")
        );
        s.put("/", "a/b", Bytes::new(), QoS::AtMostOnce);
        assert_eq!(s.matching("/", "#").len(), 1);
    }
}
