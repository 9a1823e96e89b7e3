use crate::SysfsError;
use std::fmt;

/// A PCI address in the kernel's canonical spelling `dddd:bb:dd.f` (lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress(String);

impl PciAddress {
    /// Parses `dddd:bb:dd.f` or the short `bb:dd.f` (domain 0), case-insensitively. Device is
    /// 0–0x1f and function 0–7, as in the PCI spec.
    pub fn parse(s: &str) -> Result<Self, SysfsError> {
        let bad = || SysfsError::InvalidAddress(s.to_owned());
        let parts: Vec<&str> = s.split(':').collect();
        let (domain, bus, devfn) = match parts.as_slice() {
            [d, b, df] => (*d, *b, *df),
            [b, df] => ("0000", *b, *df),
            _ => return Err(bad()),
        };
        let (dev, func) = devfn.split_once('.').ok_or_else(bad)?;
        let hex = |x: &str, max_len: usize| -> Result<u32, SysfsError> {
            if x.is_empty() || x.len() > max_len || !x.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u32::from_str_radix(x, 16).map_err(|_| bad())
        };
        let domain = hex(domain, 4)?;
        let bus = hex(bus, 2)?;
        let dev = hex(dev, 2)?;
        let func = hex(func, 1)?;
        if dev > 0x1f || func > 7 {
            return Err(bad());
        }
        Ok(Self(format!("{domain:04x}:{bus:02x}:{dev:02x}.{func:x}")))
    }

    /// The canonical spelling.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for PciAddress {
    type Err = SysfsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_and_short_forms() {
        assert_eq!(
            PciAddress::parse("0000:03:02.1").unwrap().as_str(),
            "0000:03:02.1"
        );
        assert_eq!(
            PciAddress::parse("AF:06.7").unwrap().as_str(),
            "0000:af:06.7"
        );
        assert_eq!(
            PciAddress::parse("0001:3B:1f.0").unwrap().as_str(),
            "0001:3b:1f.0"
        );
    }

    #[test]
    fn rejects_what_is_not_an_address() {
        for bad in [
            "",
            "03:02",
            "0000:03:02.8",
            "0000:03:20.0",
            "00000:03:02.1",
            "0000:03:02.1/..",
            "../../etc",
            "0000:0g:02.1",
            "0000::02.1",
            "a:b:c:d.1",
        ] {
            assert!(PciAddress::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
