//! Spec version strings, their ordering and the capabilities each version has.

use std::fmt;
use std::str::FromStr;

/// Every spec version this implementation speaks, oldest first (the order of `supportedVersions`).
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// A parsed `major.minor.patch` CNI spec version. Ordering is numeric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CniVersion {
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VersionError {
    #[error("invalid CNI version {0:?}: expected major.minor.patch")]
    Invalid(String),
}

impl CniVersion {
    pub const V0_1_0: Self = Self::new(0, 1, 0);
    pub const V0_2_0: Self = Self::new(0, 2, 0);
    pub const V0_3_0: Self = Self::new(0, 3, 0);
    pub const V0_3_1: Self = Self::new(0, 3, 1);
    pub const V0_4_0: Self = Self::new(0, 4, 0);
    pub const V1_0_0: Self = Self::new(1, 0, 0);
    pub const V1_1_0: Self = Self::new(1, 1, 0);

    pub const fn new(major: u16, minor: u16, patch: u16) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }
    /// True when this exact version is one of [`SUPPORTED_VERSIONS`].
    pub fn is_supported(&self) -> bool {
        SUPPORTED_VERSIONS.iter().any(|v| v.parse() == Ok(*self))
    }
    /// CHECK exists from 0.4.0.
    pub fn supports_check(&self) -> bool {
        *self >= Self::V0_4_0
    }
    /// STATUS and GC exist from 1.1.0.
    pub fn supports_status_gc(&self) -> bool {
        *self >= Self::V1_1_0
    }
    /// Conflists and prevResult chaining exist from 0.3.0.
    pub fn supports_chaining(&self) -> bool {
        *self >= Self::V0_3_0
    }
}

impl FromStr for CniVersion {
    type Err = VersionError;
    /// Leading zeros, signs and whitespace are rejected so that `Display` gives back the input:
    /// plugins compare version strings exactly, so a lenient parse would hide a mismatch.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || VersionError::Invalid(s.to_owned());
        let mut parts = s.split('.').map(parse_component);
        let (Some(Some(major)), Some(Some(minor)), Some(Some(patch)), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        Ok(Self::new(major, minor, patch))
    }
}

fn parse_component(part: &str) -> Option<u16> {
    let canonical = part == "0" || (!part.starts_with('0') && !part.is_empty());
    if !canonical || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}
