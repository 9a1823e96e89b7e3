//! Network configurations: a single plugin `.conf` or a `.conflist`, with unknown keys preserved.
//! Delegate configs are handled as `serde_json::Value`s so that every key a plugin understands but we
//! do not reaches it unchanged.

use crate::version::CniVersion;
use serde_json::{Map, Value};
use std::collections::BTreeSet;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("config is not a JSON object")]
    NotAnObject,
    #[error("\"plugins\" must be a non-empty list of objects")]
    BadPlugins,
    #[error("plugin {index} has no \"type\"")]
    MissingType { index: usize },
    #[error("unsupported cniVersion {0:?} (supported: 0.1.0 to 1.1.0)")]
    UnsupportedVersion(String),
}

/// A conf or conflist. For a single conf, `plugins` holds the one plugin object (which carries its
/// own `name`/`cniVersion`) and `is_list` is false.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    /// `name`, empty when absent (the NPWG spec lets a NAD omit it; see `set_name_if_missing`).
    pub name: String,
    /// `cniVersion` as written; `None` when absent (which means 0.1.0).
    pub cni_version: Option<String>,
    /// `cniVersions` (1.1.0), as written.
    pub cni_versions: Vec<String>,
    /// `disableCheck`, accepting a bool or the strings "true"/"false".
    pub disable_check: bool,
    /// `disableGC`, same rules.
    pub disable_gc: bool,
    pub plugins: Vec<Map<String, Value>>,
    pub is_list: bool,
    /// The whole document as parsed, for keys we do not model (kept up to date by the setters).
    pub raw: Map<String, Value>,
}

impl NetworkConfig {
    /// A conflist if it has a `plugins` key, else a single conf (which needs a `type`).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ConfigError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
        Self::from_value(value)
    }

    /// Ill-typed known keys (a numeric `name`, say) are reported as `Json` errors.
    pub fn from_value(value: Value) -> Result<Self, ConfigError> {
        let Value::Object(raw) = value else {
            return Err(ConfigError::NotAnObject);
        };
        let is_list = raw.contains_key("plugins");
        let plugins = if is_list {
            list_plugins(&raw)?
        } else {
            vec![raw.clone()]
        };
        if let Some(index) = plugins.iter().position(|p| plugin_type(p).is_none()) {
            return Err(ConfigError::MissingType { index });
        }
        Ok(Self {
            name: optional_string(&raw, "name")?.unwrap_or_default(),
            cni_version: optional_string(&raw, "cniVersion")?,
            cni_versions: string_list(&raw, "cniVersions")?,
            disable_check: flag(&raw, "disableCheck")?,
            disable_gc: flag(&raw, "disableGC")?,
            plugins,
            is_list,
            raw,
        })
    }

    /// The version to run with: the highest supported of `cniVersion` ∪ `cniVersions`
    /// (entries we do not support are dropped first, as libcni does); absent → 0.1.0;
    /// nothing supported → `UnsupportedVersion`.
    pub fn effective_version(&self) -> Result<CniVersion, ConfigError> {
        let declared = match self.cni_version.as_deref() {
            None | Some("") => "0.1.0",
            Some(v) => v,
        };
        std::iter::once(declared)
            .chain(self.cni_versions.iter().map(String::as_str))
            .filter_map(|v| v.parse::<CniVersion>().ok())
            .filter(CniVersion::is_supported)
            .max()
            .ok_or_else(|| ConfigError::UnsupportedVersion(declared.to_owned()))
    }

    /// Sets `name` when absent or empty (NPWG §3.4.2: inject the NAD name); updates `raw` and, for a
    /// single conf, the plugin object.
    pub fn set_name_if_missing(&mut self, name: &str) {
        if self.name.is_empty() {
            self.name = name.to_owned();
            self.set_top_level("name", Value::String(name.to_owned()));
        }
    }

    /// Sets `cniVersion` when absent; updates `raw` and the single plugin object.
    pub fn set_version_if_missing(&mut self, version: &str) {
        if self.cni_version.is_none() {
            self.cni_version = Some(version.to_owned());
            self.set_top_level("cniVersion", Value::String(version.to_owned()));
        }
    }

    /// The stdin for plugin `index`: its object with `cniVersion` (= `version`) and `name` injected,
    /// `prevResult` when given, and `runtimeConfig` holding only the keys of `runtime_config` the
    /// plugin declares in `capabilities` (libcni's rule; omitted when nothing is left).
    /// For a single conf, the object is the conf itself (its own name/cniVersion are overwritten).
    ///
    /// A `runtimeConfig` the plugin object already has is kept, with the filtered keys written over
    /// it, so static settings in a NAD survive. Existing keys keep their position; injected ones
    /// are appended.
    ///
    /// # Panics
    /// When `index` is not a plugin index.
    pub fn plugin_stdin(
        &self,
        index: usize,
        version: CniVersion,
        prev_result: Option<&Value>,
        runtime_config: Option<&Map<String, Value>>,
    ) -> Value {
        let mut conf = self.plugins[index].clone();
        conf.insert("cniVersion".into(), Value::String(version.to_string()));
        conf.insert("name".into(), Value::String(self.name.clone()));
        if let Some(prev) = prev_result {
            conf.insert("prevResult".into(), prev.clone());
        }
        let allowed = runtime_config
            .map(|rc| filter_by_capabilities(rc, &conf))
            .unwrap_or_default();
        if !allowed.is_empty() {
            merge_runtime_config(&mut conf, allowed);
        }
        Value::Object(conf)
    }

    /// Union of every plugin's `capabilities` that are `true`.
    pub fn capabilities(&self) -> BTreeSet<String> {
        self.plugins
            .iter()
            .flat_map(|p| declared_capabilities(p).map(str::to_owned))
            .collect()
    }

    /// The plugin `type`s in order.
    pub fn plugin_types(&self) -> Vec<String> {
        self.plugins
            .iter()
            .map(|p| plugin_type(p).unwrap_or_default().to_owned())
            .collect()
    }

    /// The document as JSON (`raw`).
    pub fn to_value(&self) -> Value {
        Value::Object(self.raw.clone())
    }

    /// A single conf is its own plugin object, so both copies must change together.
    fn set_top_level(&mut self, key: &str, value: Value) {
        if !self.is_list
            && let Some(plugin) = self.plugins.first_mut()
        {
            plugin.insert(key.to_owned(), value.clone());
        }
        self.raw.insert(key.to_owned(), value);
    }
}

fn list_plugins(raw: &Map<String, Value>) -> Result<Vec<Map<String, Value>>, ConfigError> {
    let Some(Value::Array(items)) = raw.get("plugins") else {
        return Err(ConfigError::BadPlugins);
    };
    if items.is_empty() {
        return Err(ConfigError::BadPlugins);
    }
    items
        .iter()
        .map(|p| p.as_object().cloned().ok_or(ConfigError::BadPlugins))
        .collect()
}

/// A missing, empty or non-string `type` cannot name a binary, so all three count as missing.
fn plugin_type(plugin: &Map<String, Value>) -> Option<&str> {
    plugin
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
}

fn optional_string(raw: &Map<String, Value>, key: &str) -> Result<Option<String>, ConfigError> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ConfigError::Json(format!(
            "{key:?} must be a string, got {other}"
        ))),
    }
}

fn string_list(raw: &Map<String, Value>, key: &str) -> Result<Vec<String>, ConfigError> {
    let bad = || ConfigError::Json(format!("{key:?} must be a list of strings"));
    match raw.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        Some(_) => Err(bad()),
    }
}

/// libcni accepts a bool or, case-insensitively, the strings "true"/"false".
fn flag(raw: &Map<String, Value>, key: &str) -> Result<bool, ConfigError> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(ConfigError::Json(format!(
            "{key:?} must be a bool or \"true\"/\"false\", got {other}"
        ))),
    }
}

/// Capability names the plugin sets to `true`; anything else (false, non-bool) does not count.
fn declared_capabilities(plugin: &Map<String, Value>) -> impl Iterator<Item = &str> {
    plugin
        .get("capabilities")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.as_bool() == Some(true))
        .map(|(k, _)| k.as_str())
}

fn filter_by_capabilities(
    runtime_config: &Map<String, Value>,
    plugin: &Map<String, Value>,
) -> Map<String, Value> {
    let declared: BTreeSet<&str> = declared_capabilities(plugin).collect();
    runtime_config
        .iter()
        .filter(|(k, _)| declared.contains(k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn merge_runtime_config(conf: &mut Map<String, Value>, allowed: Map<String, Value>) {
    match conf.get_mut("runtimeConfig") {
        Some(Value::Object(existing)) => existing.extend(allowed),
        _ => {
            conf.insert("runtimeConfig".into(), Value::Object(allowed));
        }
    }
}
