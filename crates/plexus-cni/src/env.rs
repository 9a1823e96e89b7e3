//! The `CNI_*` environment a runtime passes, validated as the spec and libcni's skel do.

use crate::args::CniArgs;
use crate::error::{CniError, codes};
use std::path::PathBuf;

/// CNI verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    /// `ADD`, `DEL`, …
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Version => "VERSION",
            Self::Status => "STATUS",
            Self::Gc => "GC",
        }
    }
    /// Parses the exact upper-case verb; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Every verb, in spec order.
    pub const ALL: [Self; 6] = [
        Self::Add,
        Self::Del,
        Self::Check,
        Self::Version,
        Self::Status,
        Self::Gc,
    ];

    /// ADD, DEL and CHECK act on one attachment and so carry container ID, netns and ifname.
    pub fn is_attachment_op(&self) -> bool {
        matches!(self, Self::Add | Self::Del | Self::Check)
    }
}

/// The validated environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    /// Empty for VERSION/STATUS/GC.
    pub container_id: String,
    /// `CNI_NETNS`; required for ADD and CHECK, optional for DEL.
    pub netns: Option<PathBuf>,
    /// Empty for VERSION/STATUS/GC.
    pub ifname: String,
    pub args: CniArgs,
    /// `CNI_PATH` split on `:` (empty entries dropped).
    pub path: Vec<PathBuf>,
}

impl CniEnv {
    /// Reads and validates the environment through `get` (so tests need not touch the process env).
    ///
    /// Rules: `CNI_COMMAND` missing → code 4; unknown → code 4 naming the value. For ADD/DEL/CHECK:
    /// `CNI_CONTAINERID` and `CNI_IFNAME` required, ADD/CHECK also `CNI_NETNS`; all the missing ones
    /// are named in one code-4 error ("required environment variables missing: CNI_NETNS, CNI_IFNAME").
    /// Container ID must match `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$` (code 4). Interface name: 1–15 bytes,
    /// not `.`/`..`, no `/`, `:` or whitespace (code 4, message says why). Malformed `CNI_ARGS` → code 4.
    ///
    /// VERSION, STATUS and GC carry no attachment parameters, so for them container ID, netns,
    /// ifname and `CNI_ARGS` are ignored rather than validated. `CNI_PATH` is never required here:
    /// whether delegates can be found is the caller's concern. An empty variable counts as missing,
    /// as in libcni's skel.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let get = |name: &str| get(name).filter(|v| !v.is_empty());
        let command = parse_command(get(ENV_COMMAND))?;
        let path = get(ENV_PATH).map(|p| split_path(&p)).unwrap_or_default();
        if !command.is_attachment_op() {
            return Ok(Self {
                command,
                container_id: String::new(),
                netns: None,
                ifname: String::new(),
                args: CniArgs::default(),
                path,
            });
        }
        let missing: Vec<&str> = required_vars(command)
            .into_iter()
            .filter(|v| get(v).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(missing_vars(&missing));
        }
        let container_id = get(ENV_CONTAINERID).unwrap_or_default();
        validate_container_id(&container_id)?;
        let ifname = get(ENV_IFNAME).unwrap_or_default();
        Self::validate_ifname(&ifname)
            .map_err(|why| invalid_env(format!("invalid {ENV_IFNAME}: {why}")))?;
        let args = CniArgs::parse(&get(ENV_ARGS).unwrap_or_default())
            .map_err(|e| invalid_env(format!("invalid {ENV_ARGS}: {e}")))?;
        Ok(Self {
            command,
            container_id,
            netns: get(ENV_NETNS).map(PathBuf::from),
            ifname,
            args,
            path,
        })
    }

    /// The same validation for an interface name alone (used for requested names); `Err` says why.
    pub fn validate_ifname(name: &str) -> Result<(), String> {
        if name.is_empty() {
            return Err("interface name is empty".into());
        }
        if name.len() > MAX_IFNAME_BYTES {
            return Err(format!(
                "interface name {name:?} is longer than {MAX_IFNAME_BYTES} bytes"
            ));
        }
        if name == "." || name == ".." {
            return Err(format!("interface name {name:?} is not allowed"));
        }
        match name
            .chars()
            .find(|c| *c == '/' || *c == ':' || c.is_whitespace())
        {
            Some(c) => Err(format!(
                "interface name {name:?} contains invalid character {c:?}"
            )),
            None => Ok(()),
        }
    }
}

pub const ENV_COMMAND: &str = "CNI_COMMAND";
pub const ENV_CONTAINERID: &str = "CNI_CONTAINERID";
pub const ENV_NETNS: &str = "CNI_NETNS";
pub const ENV_IFNAME: &str = "CNI_IFNAME";
pub const ENV_ARGS: &str = "CNI_ARGS";
pub const ENV_PATH: &str = "CNI_PATH";

/// Linux `IFNAMSIZ` (16) minus the terminating NUL.
const MAX_IFNAME_BYTES: usize = 15;

fn invalid_env(msg: impl Into<String>) -> CniError {
    CniError::new(codes::INVALID_ENVIRONMENT, msg)
}

fn missing_vars(names: &[&str]) -> CniError {
    invalid_env(format!(
        "required environment variables missing: {}",
        names.join(", ")
    ))
}

fn parse_command(value: Option<String>) -> Result<Command, CniError> {
    let value = value.ok_or_else(|| missing_vars(&[ENV_COMMAND]))?;
    Command::parse(&value).ok_or_else(|| invalid_env(format!("unknown {ENV_COMMAND} {value:?}")))
}

/// In skel's order, so the error message lists them the way other plugins do.
fn required_vars(command: Command) -> Vec<&'static str> {
    match command {
        Command::Add | Command::Check => vec![ENV_CONTAINERID, ENV_NETNS, ENV_IFNAME],
        Command::Del => vec![ENV_CONTAINERID, ENV_IFNAME],
        Command::Version | Command::Status | Command::Gc => Vec::new(),
    }
}

fn split_path(value: &str) -> Vec<PathBuf> {
    value
        .split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// Hand-written `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`, the rule libcni applies before using the ID in paths.
pub fn is_valid_container_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn validate_container_id(id: &str) -> Result<(), CniError> {
    if is_valid_container_id(id) {
        Ok(())
    } else {
        Err(invalid_env(format!(
            "invalid {ENV_CONTAINERID} {id:?}: must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"
        )))
    }
}
