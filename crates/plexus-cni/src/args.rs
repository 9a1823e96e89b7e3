//! `CNI_ARGS`: `K1=V1;K2=V2`. Values may contain `=` (only the first `=` splits), order is kept.

/// Parsed `CNI_ARGS`, order-preserving, duplicate keys kept (the last one wins on `get`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs(pub Vec<(String, String)>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    #[error("CNI_ARGS entry {0:?} is not KEY=VALUE")]
    Malformed(String),
}

impl CniArgs {
    pub const POD_NAMESPACE: &'static str = "K8S_POD_NAMESPACE";
    pub const POD_NAME: &'static str = "K8S_POD_NAME";
    pub const POD_UID: &'static str = "K8S_POD_UID";
    pub const POD_INFRA_CONTAINER_ID: &'static str = "K8S_POD_INFRA_CONTAINER_ID";
    pub const IGNORE_UNKNOWN: &'static str = "IgnoreUnknown";

    /// Parses `K=V;K=V`. Empty string → empty. Empty segments (`a=b;;c=d`) are skipped.
    pub fn parse(s: &str) -> Result<Self, ArgsError> {
        s.split(';')
            .filter(|seg| !seg.is_empty())
            .map(parse_pair)
            .collect::<Result<_, _>>()
            .map(Self)
    }
    /// Last value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// Replaces every entry of `key` with one entry (appended at the end if absent).
    /// The surviving entry keeps the position of the first one so the env string stays stable.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.0.iter().position(|(k, _)| k == key) {
            Some(first) => {
                self.0[first].1 = value;
                let mut index = 0;
                self.0.retain(|(k, _)| {
                    let keep = k != key || index == first;
                    index += 1;
                    keep
                });
            }
            None => self.0.push((key.to_owned(), value)),
        }
    }
    /// `K=V;K=V`.
    pub fn to_env_string(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An empty key is rejected too: it could never be looked up and usually means a stray `=`.
fn parse_pair(segment: &str) -> Result<(String, String), ArgsError> {
    match segment.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(ArgsError::Malformed(segment.to_owned())),
    }
}
