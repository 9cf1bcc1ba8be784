//! What a netlink call can fail with, named by the `ip` command that would have done the same.
use std::fmt;
use std::io;
use std::net::Ipv4Addr;

use super::msg::{align, ne_u32, Attrs, Msg};
use super::uapi::*;
use super::Route;

/// The operation a [`NetlinkError`] comes from; displays like the `ip` command that would do it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    LinkIndex {
        name: String,
    },
    SetLink {
        ifindex: u32,
        up: bool,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
    },
    AddAddr {
        ifindex: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
    },
    DelAddr {
        ifindex: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
    },
    DumpAddrs,
    AddRoute(Route),
    DelRoute(Route),
    DumpRoutes {
        proto: u8,
    },
    AddNeigh {
        ifindex: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
    },
    DelNeigh {
        ifindex: u32,
        ip: Ipv4Addr,
    },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::LinkIndex { name } => write!(f, "look up link {name}"),
            Op::SetLink {
                ifindex,
                up,
                mtu,
                mac,
            } => {
                write!(
                    f,
                    "set link dev {ifindex} {}",
                    if *up { "up" } else { "down" }
                )?;
                if let Some(mtu) = mtu {
                    write!(f, " mtu {mtu}")?;
                }
                if let Some(mac) = mac {
                    write!(f, " address {}", Mac(mac))?;
                }
                Ok(())
            }
            Op::AddAddr {
                ifindex,
                addr,
                prefix_len,
            } => {
                write!(f, "add address {addr}/{prefix_len} dev {ifindex}")
            }
            Op::DelAddr {
                ifindex,
                addr,
                prefix_len,
            } => {
                write!(f, "delete address {addr}/{prefix_len} dev {ifindex}")
            }
            Op::DumpAddrs => f.write_str("dump IPv4 addresses"),
            Op::AddRoute(r) => write!(f, "add route {r}"),
            Op::DelRoute(r) => write!(f, "delete route {r}"),
            Op::DumpRoutes { proto } => write!(f, "dump IPv4 routes proto {proto}"),
            Op::AddNeigh { ifindex, ip, mac } => {
                write!(f, "add neigh {ip} lladdr {} dev {ifindex}", Mac(mac))
            }
            Op::DelNeigh { ifindex, ip } => write!(f, "delete neigh {ip} dev {ifindex}"),
        }
    }
}

struct Mac<'a>(&'a [u8; 6]);

impl fmt::Display for Mac<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { ":" };
            write!(f, "{sep}{byte:02x}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be created or configured.
    #[error("open rtnetlink socket")]
    Open(#[source] io::Error),
    /// Sending the request or receiving the answer failed; `EAGAIN` means [`RECV_TIMEOUT`] passed.
    #[error("{op}: netlink socket I/O")]
    Io {
        op: Op,
        #[source]
        source: io::Error,
    },
    /// The kernel refused the request.
    #[error("{op}{}", KernelSays(.extack))]
    Kernel {
        op: Op,
        #[source]
        source: io::Error,
        /// The kernel's extended-ack message, if it sent one.
        extack: Option<String>,
    },
    /// The arguments cannot be expressed as a request.
    #[error("{op}: {reason}")]
    Invalid { op: Op, reason: &'static str },
    /// The answer broke the netlink protocol.
    #[error("{op}: malformed reply: {what}")]
    Malformed { op: Op, what: &'static str },
    /// A route to the prefix exists that vtepd does not own; it was not replaced.
    #[error("add route {route}: the kernel already has {existing} proto {} there, which is not vtepd's; leaving it alone", ProtoName(*.proto))]
    RouteTaken { route: Route, proto: u8, existing: String },
    /// Every attempt at a dump was interrupted by a concurrent change.
    #[error("{op}: dump interrupted by concurrent changes {attempts} times")]
    Interrupted { op: Op, attempts: usize },
}

impl NetlinkError {
    /// The errno from the kernel or the socket, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Open(e) | NetlinkError::Io { source: e, .. } => e.raw_os_error(),
            NetlinkError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

struct KernelSays<'a>(&'a Option<String>);

impl fmt::Display for KernelSays<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(msg) => write!(f, " (kernel: {msg})"),
            None => Ok(()),
        }
    }
}

/// Turns the `NLMSG_ERROR` or `NLMSG_DONE` that ends an exchange into its result. Both start with
/// an `int` that is 0 or a negative errno.
pub(super) fn end_of_exchange(op: &Op, msg: &Msg<'_>) -> Result<(), NetlinkError> {
    let code = msg
        .payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
        .ok_or_else(|| NetlinkError::Malformed {
            op: op.clone(),
            what: "short error or done message",
        })?;
    if code == 0 {
        return Ok(());
    }
    let extack = if msg.flags & NLM_F_ACK_TLVS != 0 {
        extack_offset(msg).and_then(|at| extack_message(&msg.payload[at..]))
    } else {
        None
    };
    let source = io::Error::from_raw_os_error(code.saturating_neg());
    Err(NetlinkError::Kernel {
        op: op.clone(),
        source,
        extack,
    })
}

/// Where the extended-ack attributes start: after the error code in `NLMSG_DONE`; in
/// `NLMSG_ERROR` also after the echo of our request (only its header if capped).
fn extack_offset(msg: &Msg<'_>) -> Option<usize> {
    if msg.ty == NLMSG_DONE {
        return Some(4);
    }
    let echoed = if msg.flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        ne_u32(msg.payload.get(4..))? as usize
    };
    let at = 4 + align(echoed);
    (at <= msg.payload.len()).then_some(at)
}

fn extack_message(attrs: &[u8]) -> Option<String> {
    let (_, text) = Attrs(attrs).find(|&(ty, _)| ty == NLMSGERR_ATTR_MSG)?;
    let text = text.split(|&b| b == 0).next().unwrap_or_default();
    Some(String::from_utf8_lossy(text).trim_end().to_owned())
}

/// A route protocol the way `ip route` names the common ones.
struct ProtoName(u8);

impl fmt::Display for ProtoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            RTPROT_KERNEL => f.write_str("kernel"),
            RTPROT_BOOT => f.write_str("boot"),
            RTPROT_STATIC => f.write_str("static"),
            n => write!(f, "{n}"),
        }
    }
}
