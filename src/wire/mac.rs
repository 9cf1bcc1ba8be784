//! 48-bit Ethernet MAC addresses.
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// The I/G bit: set for multicast and broadcast.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// One station's address, as a VTEP MAC must be: neither all-zero nor a group address.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast() && *self != MacAddr::default()
    }

    /// A locally administered unicast MAC that stays the same for a given underlay address, so
    /// restarting vtepd never leaves stale permanent neighbour entries on peers (flannel#1139-style).
    pub fn from_underlay_ip(ip: Ipv4Addr) -> MacAddr {
        let o = ip.octets();
        MacAddr([0x02, 0x76, o[0], o[1], o[2], o[3]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a MAC address (expected six hex bytes separated by ':')")]
pub struct ParseMacError(String);

impl FromStr for MacAddr {
    type Err = ParseMacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let p = parts.next().ok_or_else(err)?;
            // from_str_radix alone would also take "+2".
            if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(err());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        let m: MacAddr = "02:00:0a:FF:00:01".parse().unwrap();
        assert_eq!(m.0, [2, 0, 0x0a, 0xff, 0, 1]);
        assert_eq!(m.to_string(), "02:00:0a:ff:00:01");
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "02:00:00:00:00", "02:00:00:00:00:00:00", "2:00:00:00:00:00", "zz:00:00:00:00:00", "+2:+0:+0:+0:+0:+1", "02:00:00:00:00:-1"] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn derived_mac_is_stable_unicast_and_local() {
        let m = MacAddr::from_underlay_ip(Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(m, MacAddr::from_underlay_ip(Ipv4Addr::new(192, 0, 2, 1)));
        assert!(!m.is_multicast());
        assert_eq!(m.0[0] & 0x02, 0x02);
    }
}
