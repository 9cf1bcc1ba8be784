//! A small synchronous rtnetlink (`NETLINK_ROUTE`) client, IPv4 only for now.
//!
//! vtepd sets up its TAP device the way Flannel sets up `flannel.1`: a /32 address on the
//! device, one route per remote subnet (`10.244.2.0/24 via 10.244.2.0 dev vtep0 onlink`), one
//! permanent neighbour per remote VTEP, and in host-gw mode plain routes through the underlay.
//! That needs four message families (link, address, route, neighbour) and about a dozen
//! attributes, so the client is written by hand: the `rtnetlink` crate would bring a tokio
//! runtime into a control plane that is otherwise synchronous, and `netlink-packet-route`
//! changes its API in most releases.
//!
//! What a [`Netlink`] guarantees:
//! - Every request carries `NLM_F_ACK` and a fresh sequence number, and a call returns only
//!   after the kernel's answer to that sequence number, so `Ok` means the change is applied.
//! - Only datagrams sent by the kernel (port id 0) and carrying the request's sequence number
//!   are believed. Anything else, such as the tail of an earlier dump that was abandoned on
//!   error, is skipped.
//! - Dumps are read to `NLMSG_DONE`. If the kernel marks a dump as interrupted by a concurrent
//!   change (`NLM_F_DUMP_INTR`), the dump is run again, so a caller gets a consistent snapshot
//!   or an error.
//! - Datagrams are never truncated: each one's length is peeked (`MSG_PEEK | MSG_TRUNC`)
//!   before it is read.
//! - Errors name the operation and carry the errno, plus the kernel's extended-ack message when
//!   it sends one ("Nexthop device is not up").
//! - Adding what is already there and deleting what is already gone succeed. Each method says
//!   which errno it tolerates.
//! - [`Netlink::del_route`] removes only routes that carry [`RTPROT_VTEPD`], never routes
//!   someone else installed.
//! - A call waits at most [`RECV_TIMEOUT`] for each datagram from the kernel.
//!
//! A netlink socket works on the network namespace it was created in, whichever thread uses it
//! later. The wire format is in host byte order, except that addresses are in network order.
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use tracing::{debug, trace};

/// The `rtm_protocol` of every route vtepd installs (`proto 118` in `ip route`), so that after a
/// restart [`Netlink::routes_by_protocol`] finds the routes a previous run left behind.
pub const RTPROT_VTEPD: u8 = 0x76;

/// How long a call waits for each datagram from the kernel before giving up with `EAGAIN`.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// Receive buffers start at this size. The kernel sizes a dump's datagrams to the largest buffer
/// the reader has offered, capped at 32 KiB, so this also keeps the number of datagrams low.
const RECV_BUF_LEN: usize = 32 * 1024;

/// How many times a dump is run again after the kernel reports it as interrupted.
const DUMP_ATTEMPTS: usize = 3;

/// Constants from the Linux UAPI headers (`linux/netlink.h`, `linux/rtnetlink.h`,
/// `linux/if_addr.h`, `linux/neighbour.h`), typed as they appear on the wire. The `libc` crate
/// has only some of them, and with varying integer types.
mod uapi {
    pub const NLMSG_HDRLEN: usize = 16;
    pub const NLA_HDRLEN: usize = 4;
    /// `nla_type` carries two flag bits above the type itself.
    pub const NLA_TYPE_MASK: u16 = !(1 << 15 | 1 << 14);

    pub const NLMSG_NOOP: u16 = 1;
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLMSG_DONE: u16 = 3;
    pub const NLMSG_OVERRUN: u16 = 4;

    pub const NLM_F_REQUEST: u16 = 0x001;
    pub const NLM_F_ACK: u16 = 0x004;
    pub const NLM_F_DUMP_INTR: u16 = 0x010;
    pub const NLM_F_REPLACE: u16 = 0x100;
    pub const NLM_F_EXCL: u16 = 0x200;
    pub const NLM_F_CREATE: u16 = 0x400;
    pub const NLM_F_DUMP: u16 = 0x300;
    /// On an `NLMSG_ERROR`: only the header of our request is echoed back.
    pub const NLM_F_CAPPED: u16 = 0x100;
    /// On an `NLMSG_ERROR` or `NLMSG_DONE`: extended-ack attributes follow.
    pub const NLM_F_ACK_TLVS: u16 = 0x200;
    pub const NLMSGERR_ATTR_MSG: u16 = 1;

    pub const RTM_NEWLINK: u16 = 16;
    pub const RTM_GETLINK: u16 = 18;
    pub const RTM_SETLINK: u16 = 19;
    pub const RTM_NEWADDR: u16 = 20;
    pub const RTM_DELADDR: u16 = 21;
    pub const RTM_GETADDR: u16 = 22;
    pub const RTM_NEWROUTE: u16 = 24;
    pub const RTM_DELROUTE: u16 = 25;
    pub const RTM_GETROUTE: u16 = 26;
    pub const RTM_NEWNEIGH: u16 = 28;
    pub const RTM_DELNEIGH: u16 = 29;

    pub const IFLA_ADDRESS: u16 = 1;
    pub const IFLA_IFNAME: u16 = 3;
    pub const IFLA_MTU: u16 = 4;
    pub const IFA_ADDRESS: u16 = 1;
    pub const IFA_LOCAL: u16 = 2;
    pub const RTA_DST: u16 = 1;
    pub const RTA_OIF: u16 = 4;
    pub const RTA_GATEWAY: u16 = 5;
    pub const RTA_MULTIPATH: u16 = 9;
    pub const RTA_TABLE: u16 = 15;
    pub const NDA_DST: u16 = 1;
    pub const NDA_LLADDR: u16 = 2;

    pub const AF_UNSPEC: u8 = libc::AF_UNSPEC as u8;
    pub const AF_INET: u8 = libc::AF_INET as u8;
    pub const IFF_UP: u32 = libc::IFF_UP as u32;
    pub const IFNAMSIZ: usize = libc::IFNAMSIZ;
    pub const RT_TABLE_MAIN: u8 = 254;
    pub const RTN_UNICAST: u8 = 1;
    pub const RT_SCOPE_UNIVERSE: u8 = 0;
    pub const RT_SCOPE_LINK: u8 = 253;
    /// In a delete request: match a route of any scope.
    pub const RT_SCOPE_NOWHERE: u8 = 255;
    pub const RTNH_F_ONLINK: u32 = 4;
    pub const NUD_PERMANENT: u16 = 0x80;
}
use uapi::*;

/// An IPv4 unicast route in the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    /// `None` for a device route (`10.244.2.0/24 dev vtep0`).
    pub gateway: Option<Ipv4Addr>,
    pub ifindex: u32,
    /// Take the gateway as directly reachable on the device even though no local subnet covers it,
    /// as Flannel's VXLAN routes do (the gateway is the remote subnet's own network address).
    pub onlink: bool,
}

impl fmt::Display for Route {
    /// The way `ip route` prints it, with the device as an index.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.dst, self.prefix_len)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        write!(f, " dev {}", self.ifindex)?;
        if self.onlink {
            f.write_str(" onlink")?;
        }
        Ok(())
    }
}

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

/// A connection to the kernel's routing subsystem in the network namespace it was opened in.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    pub fn open() -> Result<Self, NetlinkError> {
        let fd = sys::socket().map_err(NetlinkError::Open)?;
        // Extended acks turn a bare EINVAL into the kernel's reason, and capped acks keep the echo
        // of a failed request to its header. Kernels before 4.12 refuse both options; they work
        // without them, only with terser errors, so a refusal is logged and otherwise ignored.
        for opt in [libc::NETLINK_EXT_ACK, libc::NETLINK_CAP_ACK] {
            if let Err(e) = sys::set_opt(&fd, libc::SOL_NETLINK, opt, &1_i32) {
                debug!(opt, error = %e, "netlink socket option not supported");
            }
        }
        let timeout = libc::timeval {
            tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        sys::set_opt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)
            .map_err(NetlinkError::Open)?;
        Ok(Netlink {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUF_LEN],
        })
    }

    /// The index of the interface called `name`, or `None` if there is none.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let op = Op::LinkIndex {
            name: name.to_owned(),
        };
        if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
            let reason = "an interface name is 1 to 15 bytes without NUL";
            return Err(NetlinkError::Invalid { op, reason });
        }
        let mut req = Request::new(RTM_GETLINK, 0, &ifinfomsg(0, 0, 0));
        req.attr(IFLA_IFNAME, &[name.as_bytes(), &[0]].concat());
        let mut index = None;
        let res = self.exchange(&op, &mut req, &mut |ty, payload| {
            if ty == RTM_NEWLINK {
                index = Some(ne_u32(payload.get(4..)).ok_or("short ifinfomsg")?);
            }
            Ok(())
        });
        match res {
            Ok(_) if index.is_none() => Err(NetlinkError::Malformed {
                op,
                what: "no link in reply",
            }),
            Ok(_) => Ok(index),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets the device up or down and, if given, its MTU and MAC address, in one request. The
    /// kernel applies the MAC and MTU before the flags; if one of them fails, the ones before it
    /// may already be applied.
    pub fn set_link(
        &mut self,
        ifindex: u32,
        up: bool,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
    ) -> Result<(), NetlinkError> {
        let op = Op::SetLink {
            ifindex,
            up,
            mtu,
            mac,
        };
        let flags = if up { IFF_UP } else { 0 };
        let mut req = Request::new(RTM_SETLINK, 0, &ifinfomsg(ifindex, flags, IFF_UP));
        if let Some(mtu) = mtu {
            req.attr(IFLA_MTU, &mtu.to_ne_bytes());
        }
        if let Some(mac) = mac {
            req.attr(IFLA_ADDRESS, &mac);
        }
        self.ack(&op, &mut req)
    }

    /// Adds `addr/prefix_len` to the device. Already present is success (`EEXIST`).
    pub fn add_addr(
        &mut self,
        ifindex: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let op = Op::AddAddr {
            ifindex,
            addr,
            prefix_len,
        };
        check_prefix_len(&op, prefix_len)?;
        let mut req = addr_request(
            RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_EXCL,
            ifindex,
            addr,
            prefix_len,
        );
        tolerate(self.ack(&op, &mut req), &[libc::EEXIST])
    }

    /// Removes `addr/prefix_len` from the device. Already gone is success: IPv4 reports a missing
    /// address as `EADDRNOTAVAIL`, other families as `ENOENT`. A missing device is still an error.
    pub fn del_addr(
        &mut self,
        ifindex: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let op = Op::DelAddr {
            ifindex,
            addr,
            prefix_len,
        };
        check_prefix_len(&op, prefix_len)?;
        let mut req = addr_request(RTM_DELADDR, 0, ifindex, addr, prefix_len);
        tolerate(
            self.ack(&op, &mut req),
            &[libc::EADDRNOTAVAIL, libc::ENOENT],
        )
    }

    /// Whether any interface in this network namespace has `addr` as a local address.
    pub fn host_has_addr(&mut self, addr: Ipv4Addr) -> Result<bool, NetlinkError> {
        let mut req = Request::new(RTM_GETADDR, NLM_F_DUMP, &ifaddrmsg(AF_INET, 0, 0));
        let locals = self.dump(&Op::DumpAddrs, &mut req, parse_addr)?;
        Ok(locals.contains(&addr))
    }

    /// Installs the route in the main table with protocol [`RTPROT_VTEPD`], replacing any route to
    /// the same prefix. Routes with a gateway get scope universe. Device routes get scope link, as
    /// `ip route add` gives them, so that they can resolve the gateways of other routes: the
    /// kernel looks a gateway up only among routes of a narrower scope than the route using it.
    pub fn add_route(&mut self, r: &Route) -> Result<(), NetlinkError> {
        let op = Op::AddRoute(*r);
        check_prefix_len(&op, r.prefix_len)?;
        if r.onlink && r.gateway.is_none() {
            let reason = "onlink needs a gateway";
            return Err(NetlinkError::Invalid { op, reason });
        }
        let scope = if r.gateway.is_some() {
            RT_SCOPE_UNIVERSE
        } else {
            RT_SCOPE_LINK
        };
        let mut req = route_request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, r, scope);
        self.ack(&op, &mut req)
    }

    /// Removes the route if it carries protocol [`RTPROT_VTEPD`]. Already gone is success: the
    /// kernel says `ESRCH` for a missing route and `ENOENT` for a missing table.
    pub fn del_route(&mut self, r: &Route) -> Result<(), NetlinkError> {
        let op = Op::DelRoute(*r);
        check_prefix_len(&op, r.prefix_len)?;
        let mut req = route_request(RTM_DELROUTE, 0, r, RT_SCOPE_NOWHERE);
        tolerate(self.ack(&op, &mut req), &[libc::ESRCH, libc::ENOENT])
    }

    /// The IPv4 unicast routes in the main table that carry protocol `proto`. Multipath routes are
    /// left out: a [`Route`] cannot describe them, and vtepd never installs them.
    pub fn routes_by_protocol(&mut self, proto: u8) -> Result<Vec<Route>, NetlinkError> {
        // Without NETLINK_GET_STRICT_CHK the kernel ignores filters in the request and dumps every
        // table, so the filtering happens here.
        let rtm = RtMsg {
            family: AF_INET,
            ..RtMsg::default()
        };
        let mut req = Request::new(RTM_GETROUTE, NLM_F_DUMP, &rtm.encode());
        self.dump(&Op::DumpRoutes { proto }, &mut req, |ty, p| {
            parse_route(ty, p, proto)
        })
    }

    /// Installs a permanent neighbour entry, replacing any entry for `ip` on the device.
    pub fn add_neigh(
        &mut self,
        ifindex: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
    ) -> Result<(), NetlinkError> {
        let op = Op::AddNeigh { ifindex, ip, mac };
        let mut req = Request::new(
            RTM_NEWNEIGH,
            NLM_F_CREATE | NLM_F_REPLACE,
            &ndmsg(ifindex, NUD_PERMANENT),
        );
        req.attr(NDA_DST, &ip.octets()).attr(NDA_LLADDR, &mac);
        self.ack(&op, &mut req)
    }

    /// Removes the neighbour entry for `ip` on the device. Already gone is success (`ENOENT`).
    pub fn del_neigh(&mut self, ifindex: u32, ip: Ipv4Addr) -> Result<(), NetlinkError> {
        let op = Op::DelNeigh { ifindex, ip };
        let mut req = Request::new(RTM_DELNEIGH, 0, &ndmsg(ifindex, 0));
        req.attr(NDA_DST, &ip.octets());
        tolerate(self.ack(&op, &mut req), &[libc::ENOENT])
    }

    /// Sends a request that changes something and waits for its ack.
    fn ack(&mut self, op: &Op, req: &mut Request) -> Result<(), NetlinkError> {
        self.exchange(op, req, &mut |ty, _| {
            // Nothing but the ack is expected without NLM_F_ECHO; the change is made either way.
            trace!(%op, ty, "ignoring unexpected reply");
            Ok(())
        })
        .map(drop)
    }

    /// Runs a dump, collecting what `parse` keeps, and runs it again if it was interrupted.
    fn dump<T>(
        &mut self,
        op: &Op,
        req: &mut Request,
        mut parse: impl FnMut(u16, &[u8]) -> Result<Option<T>, &'static str>,
    ) -> Result<Vec<T>, NetlinkError> {
        for _ in 0..DUMP_ATTEMPTS {
            let mut items = Vec::new();
            let interrupted = self.exchange(op, req, &mut |ty, payload| {
                items.extend(parse(ty, payload)?);
                Ok(())
            })?;
            if !interrupted {
                return Ok(items);
            }
            debug!(%op, "dump interrupted by a concurrent change; running it again");
        }
        Err(NetlinkError::Interrupted {
            op: op.clone(),
            attempts: DUMP_ATTEMPTS,
        })
    }

    /// Sends `req` under a fresh sequence number and hands each reply to `on_reply` until the
    /// kernel ends the exchange with an ack or error (`NLMSG_ERROR`) or the end of a dump
    /// (`NLMSG_DONE`). Returns whether the kernel flagged a dump as interrupted.
    fn exchange(
        &mut self,
        op: &Op,
        req: &mut Request,
        on_reply: &mut OnReply<'_>,
    ) -> Result<bool, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = req.finish(seq);
        let io_err = |source| NetlinkError::Io {
            op: op.clone(),
            source,
        };
        let malformed = |what| NetlinkError::Malformed {
            op: op.clone(),
            what,
        };
        let sent = sys::send(&self.fd, bytes).map_err(io_err)?;
        if sent != bytes.len() {
            return Err(malformed("request sent only in part"));
        }
        let mut interrupted = false;
        loop {
            let len = self
                .recv()
                .map_err(io_err)?
                .ok_or_else(|| malformed("datagram truncated"))?;
            for msg in Messages(&self.buf[..len]) {
                let msg = msg.map_err(malformed)?;
                if msg.seq != seq {
                    trace!(%op, seq = msg.seq, expected = seq, "skipping stale netlink message");
                    continue;
                }
                interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
                match msg.ty {
                    NLMSG_NOOP => {}
                    NLMSG_ERROR | NLMSG_DONE => {
                        return end_of_exchange(op, &msg).map(|()| interrupted)
                    }
                    NLMSG_OVERRUN => return Err(malformed("NLMSG_OVERRUN")),
                    ty => on_reply(ty, msg.payload).map_err(malformed)?,
                }
            }
        }
    }

    /// Reads the next datagram from the kernel into `self.buf` and returns its length, or `None`
    /// if it did not fit after all. Datagrams from other sockets are dropped: any process may
    /// send to our port id.
    fn recv(&mut self) -> io::Result<Option<usize>> {
        loop {
            let want = sys::peek_len(&self.fd)?;
            if want > self.buf.len() {
                self.buf.resize(want, 0);
            }
            let (len, sender) = sys::recv_from(&self.fd, &mut self.buf)?;
            if sender == 0 {
                return Ok((len <= self.buf.len()).then_some(len));
            }
            debug!(sender, "dropping netlink datagram not sent by the kernel");
        }
    }
}

/// Takes one reply (message type, payload) of an exchange; an `Err` names a protocol violation.
type OnReply<'a> = dyn FnMut(u16, &[u8]) -> Result<(), &'static str> + 'a;

/// Turns the `NLMSG_ERROR` or `NLMSG_DONE` that ends an exchange into its result. Both start with
/// an `int` that is 0 or a negative errno.
fn end_of_exchange(op: &Op, msg: &Msg<'_>) -> Result<(), NetlinkError> {
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

fn tolerate(res: Result<(), NetlinkError>, errnos: &[i32]) -> Result<(), NetlinkError> {
    match res {
        Err(NetlinkError::Kernel { ref source, .. })
            if source.raw_os_error().is_some_and(|e| errnos.contains(&e)) =>
        {
            Ok(())
        }
        res => res,
    }
}

fn check_prefix_len(op: &Op, prefix_len: u8) -> Result<(), NetlinkError> {
    if prefix_len > 32 {
        let reason = "an IPv4 prefix length is at most 32";
        return Err(NetlinkError::Invalid {
            op: op.clone(),
            reason,
        });
    }
    Ok(())
}

fn addr_request(ty: u16, flags: u16, ifindex: u32, addr: Ipv4Addr, prefix_len: u8) -> Request {
    let mut req = Request::new(ty, flags, &ifaddrmsg(AF_INET, prefix_len, ifindex));
    // IFA_LOCAL is the address itself; IFA_ADDRESS is the peer on point-to-point links and
    // the same address elsewhere. `ip addr add` sends both.
    req.attr(IFA_LOCAL, &addr.octets())
        .attr(IFA_ADDRESS, &addr.octets());
    req
}

fn route_request(ty: u16, flags: u16, r: &Route, scope: u8) -> Request {
    let rtm = RtMsg {
        family: AF_INET,
        dst_len: r.prefix_len,
        table: RT_TABLE_MAIN,
        protocol: RTPROT_VTEPD,
        scope,
        kind: RTN_UNICAST,
        flags: if r.onlink { RTNH_F_ONLINK } else { 0 },
    };
    let mut req = Request::new(ty, flags, &rtm.encode());
    req.attr(RTA_DST, &r.dst.octets())
        .attr(RTA_OIF, &r.ifindex.to_ne_bytes());
    if let Some(gw) = r.gateway {
        req.attr(RTA_GATEWAY, &gw.octets());
    }
    req
}

/// The local address of an `RTM_NEWADDR` in an address dump.
fn parse_addr(ty: u16, payload: &[u8]) -> Result<Option<Ipv4Addr>, &'static str> {
    let family = *payload.first().ok_or("short ifaddrmsg")?;
    if ty != RTM_NEWADDR || family != AF_INET {
        return Ok(None);
    }
    let (mut local, mut address) = (None, None);
    for (ty, value) in Attrs(payload.get(IFADDRMSG_LEN..).ok_or("short ifaddrmsg")?) {
        match ty {
            IFA_LOCAL => local = Some(ipv4(value)?),
            IFA_ADDRESS => address = Some(ipv4(value)?),
            _ => {}
        }
    }
    // IPv4 always sends IFA_LOCAL (IFA_ADDRESS is the peer on point-to-point links). IPv6 sends
    // only IFA_ADDRESS unless there is a peer; the fallback is for when IPv6 is added.
    Ok(local.or(address))
}

/// A [`Route`] from an `RTM_NEWROUTE` in a route dump, if it is an IPv4 unicast route in the main
/// table with protocol `proto` and a single next hop.
fn parse_route(ty: u16, payload: &[u8], proto: u8) -> Result<Option<Route>, &'static str> {
    let rtm = RtMsg::decode(payload).ok_or("short rtmsg")?;
    if ty != RTM_NEWROUTE
        || rtm.family != AF_INET
        || rtm.protocol != proto
        || rtm.kind != RTN_UNICAST
    {
        return Ok(None);
    }
    let mut table = u32::from(rtm.table);
    let (mut dst, mut gateway, mut oif) = (Ipv4Addr::UNSPECIFIED, None, None);
    for (ty, value) in Attrs(&payload[RtMsg::LEN..]) {
        match ty {
            // rtm_table is one byte; RTA_TABLE holds the real number.
            RTA_TABLE => table = ne_u32(Some(value)).ok_or("short RTA_TABLE")?,
            RTA_DST => dst = ipv4(value)?,
            RTA_GATEWAY => gateway = Some(ipv4(value)?),
            RTA_OIF => oif = Some(ne_u32(Some(value)).ok_or("short RTA_OIF")?),
            RTA_MULTIPATH => return Ok(None),
            _ => {}
        }
    }
    let Some(ifindex) = oif.filter(|_| table == u32::from(RT_TABLE_MAIN)) else {
        return Ok(None);
    };
    let onlink = rtm.flags & RTNH_F_ONLINK != 0;
    Ok(Some(Route {
        dst,
        prefix_len: rtm.dst_len,
        gateway,
        ifindex,
        onlink,
    }))
}

fn ipv4(value: &[u8]) -> Result<Ipv4Addr, &'static str> {
    <[u8; 4]>::try_from(value)
        .map(Ipv4Addr::from)
        .map_err(|_| "IPv4 attribute is not 4 bytes")
}

fn ne_u32(bytes: Option<&[u8]>) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes?.get(..4)?.try_into().ok()?))
}

/// `NLMSG_ALIGN` and `NLA_ALIGN`: both round up to 4 bytes.
const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// A request being built: `struct nlmsghdr`, the family header, then attributes, each padded to
/// 4 bytes. Length and sequence number are filled in by [`Request::finish`].
#[derive(Debug)]
struct Request {
    buf: Vec<u8>,
}

impl Request {
    /// Every request asks for an ack, so that errors and completion are never silent.
    fn new(ty: u16, flags: u16, header: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0_u32.to_ne_bytes()); // nlmsg_len
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&0_u32.to_ne_bytes()); // nlmsg_seq
        buf.extend_from_slice(&0_u32.to_ne_bytes()); // nlmsg_pid: the kernel fills in ours
        buf.extend_from_slice(header);
        buf.resize(align(buf.len()), 0);
        Request { buf }
    }

    /// Appends an attribute. Payloads here are a few bytes, far below the 64 KiB `nla_len` limit.
    fn attr(&mut self, ty: u16, payload: &[u8]) -> &mut Self {
        let len = u16::try_from(NLA_HDRLEN + payload.len()).expect("attribute payloads are small");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// The request as sent under sequence number `seq`. May be called again for a retry.
    fn finish(&mut self, seq: u32) -> &[u8] {
        let len = u32::try_from(self.buf.len()).expect("requests are small");
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        &self.buf
    }
}

/// `struct ifinfomsg`, family unspecified.
fn ifinfomsg(ifindex: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut h = vec![AF_UNSPEC, 0, 0, 0]; // ifi_family, pad, ifi_type
    for field in [ifindex, flags, change] {
        h.extend_from_slice(&field.to_ne_bytes());
    }
    h
}

const IFADDRMSG_LEN: usize = 8;

/// `struct ifaddrmsg`: family, prefix length, flags, scope, ifindex.
fn ifaddrmsg(family: u8, prefix_len: u8, ifindex: u32) -> Vec<u8> {
    let mut h = vec![family, prefix_len, 0, RT_SCOPE_UNIVERSE];
    h.extend_from_slice(&ifindex.to_ne_bytes());
    h
}

/// `struct ndmsg` for IPv4: family, padding, ifindex, state, flags, type.
fn ndmsg(ifindex: u32, state: u16) -> Vec<u8> {
    let mut h = vec![AF_INET, 0, 0, 0];
    h.extend_from_slice(&ifindex.to_ne_bytes());
    h.extend_from_slice(&state.to_ne_bytes());
    h.extend_from_slice(&[0, 0]);
    h
}

/// `struct rtmsg`.
#[derive(Debug, Default, Clone, Copy)]
struct RtMsg {
    family: u8,
    dst_len: u8,
    table: u8,
    protocol: u8,
    scope: u8,
    kind: u8,
    flags: u32,
}

impl RtMsg {
    const LEN: usize = 12;

    fn encode(&self) -> Vec<u8> {
        // rtm_src_len and rtm_tos stay 0: vtepd routes on destination only.
        let mut h = vec![
            self.family,
            self.dst_len,
            0,
            0,
            self.table,
            self.protocol,
            self.scope,
            self.kind,
        ];
        h.extend_from_slice(&self.flags.to_ne_bytes());
        h
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let h = b.get(..Self::LEN)?;
        Some(RtMsg {
            family: h[0],
            dst_len: h[1],
            table: h[4],
            protocol: h[5],
            scope: h[6],
            kind: h[7],
            flags: ne_u32(Some(&h[8..]))?,
        })
    }
}

/// One message of a received datagram.
#[derive(Debug)]
struct Msg<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The messages in a datagram. A length that does not fit ends the iteration with an error.
struct Messages<'a>(&'a [u8]);

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Msg<'a>, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let buf = std::mem::take(&mut self.0);
        let len = ne_u32(Some(buf)).map_or(0, |l| l as usize);
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Some(Err("nlmsg_len does not fit the datagram"));
        }
        self.0 = buf.get(align(len)..).unwrap_or_default();
        Some(Ok(Msg {
            ty: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: ne_u32(Some(&buf[8..])).unwrap_or_default(),
            payload: &buf[NLMSG_HDRLEN..len],
        }))
    }
}

/// The attributes (`struct nlattr`) in a buffer, as (type, payload). Iteration stops at the first
/// attribute whose length does not fit.
struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let buf = std::mem::take(&mut self.0);
        let len = usize::from(u16::from_ne_bytes([*buf.first()?, *buf.get(1)?]));
        if len < NLA_HDRLEN || len > buf.len() {
            return None;
        }
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        self.0 = buf.get(align(len)..).unwrap_or_default();
        Some((ty, &buf[NLA_HDRLEN..len]))
    }
}

/// The system calls, each wrapped so that the rest of the module is safe code.
mod sys {
    use std::io;
    use std::mem;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::ptr;

    pub fn socket() -> io::Result<OwnedFd> {
        // SAFETY: socket(2) takes no pointers; the arguments are constants.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2), so it is open and owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub fn set_opt<T>(
        fd: &OwnedFd,
        level: libc::c_int,
        name: libc::c_int,
        value: &T,
    ) -> io::Result<()> {
        // Option values are an int or a timeval, far below socklen_t's range.
        let len = mem::size_of::<T>() as libc::socklen_t;
        // SAFETY: `value` points to a live `T` of exactly `len` bytes for the whole call, and the
        // kernel only reads from it.
        let ret = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                name,
                ptr::from_ref(value).cast(),
                len,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends one datagram to the kernel: an unconnected netlink socket sends to port 0, and the
    /// first send binds it to a port id of the kernel's choosing.
    pub fn send(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
        retry_eintr(|| {
            // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole call.
            unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) }
        })
    }

    /// The length of the next datagram, which stays queued. With `MSG_TRUNC` netlink reports the
    /// full length even though nothing is copied.
    pub fn peek_len(fd: &OwnedFd) -> io::Result<usize> {
        retry_eintr(|| {
            // SAFETY: a zero-length buffer is never written to, so a null pointer is fine.
            unsafe {
                libc::recv(
                    fd.as_raw_fd(),
                    ptr::null_mut(),
                    0,
                    libc::MSG_PEEK | libc::MSG_TRUNC,
                )
            }
        })
    }

    /// Reads one datagram into `buf`; returns its full length (`MSG_TRUNC`, so a length above
    /// `buf.len()` shows truncation) and the sender's port id (0 is the kernel).
    pub fn recv_from(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, u32)> {
        // SAFETY: sockaddr_nl is plain old data, for which all zero bytes is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
        let mut addr_len = mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        let len = retry_eintr(|| {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes, and `addr` for writes of
            // `addr_len` bytes, for the whole call.
            unsafe {
                libc::recvfrom(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                    ptr::from_mut(&mut addr).cast(),
                    ptr::from_mut(&mut addr_len),
                )
            }
        })?;
        Ok((len, addr.nl_pid))
    }

    fn retry_eintr(mut call: impl FnMut() -> isize) -> io::Result<usize> {
        loop {
            if let Ok(n) = usize::try_from(call()) {
                return Ok(n);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs::File;
    use std::os::fd::AsRawFd;
    use std::process::Command;
    use std::sync::{Mutex, PoisonError};
    use std::thread;

    const MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0xf4, 0x02, 0x00];
    const MAC2: [u8; 6] = [0x02, 0x42, 0x0a, 0xf4, 0x02, 0x01];

    /// `ip netns add` sets up the /run/netns mount the first time; concurrent first calls race.
    static NETNS_LOCK: Mutex<()> = Mutex::new(());

    /// A network namespace with a veth pair `a`/`b` in it, removed on drop, also when a test fails.
    struct NetNs {
        name: String,
    }

    impl NetNs {
        fn new(test: &str) -> Self {
            let name = format!("vtepd-nl-{test}-{}", std::process::id());
            {
                let _lock = NETNS_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
                run(&["netns", "add", &name]);
            }
            let ns = NetNs { name };
            // `name` is needed: iproute2 reads a bare `a` as the abbreviation of `address`.
            ns.ip(&[
                "link", "add", "name", "a", "type", "veth", "peer", "name", "b",
            ]);
            // As on any real host. Until lo is up or an address exists, the namespace has no
            // local routing table, and without one the kernel refuses every onlink gateway
            // ("Nexthop has invalid gateway") because it cannot tell that the gateway is not local.
            ns.ip(&["link", "set", "dev", "lo", "up"]);
            ns
        }

        fn ip(&self, args: &[&str]) -> String {
            run(&[&["-n", &self.name], args].concat())
        }

        /// A socket opened from a thread inside the namespace. Network namespaces are per thread,
        /// and a socket stays in the namespace it was created in, so the test thread can use it.
        fn netlink(&self) -> Netlink {
            let path = format!("/var/run/netns/{}", self.name);
            thread::spawn(move || {
                let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: setns(2) only reads the descriptor, which `ns` keeps open; it moves this
                // short-lived thread alone into the namespace.
                let ret = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(ret, 0, "setns {path}: {}", io::Error::last_os_error());
                Netlink::open().expect("open netlink in namespace")
            })
            .join()
            .expect("netns thread panicked")
        }

        fn index(&self, nl: &mut Netlink, dev: &str) -> u32 {
            nl.link_index(dev)
                .unwrap()
                .unwrap_or_else(|| panic!("{dev} exists in {}", self.name))
        }
    }

    impl Drop for NetNs {
        fn drop(&mut self) {
            let _lock = NETNS_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
            let out = Command::new("ip")
                .args(["netns", "del", &self.name])
                .output();
            if !out.is_ok_and(|o| o.status.success()) {
                eprintln!("could not remove network namespace {}", self.name);
            }
        }
    }

    fn run(args: &[&str]) -> String {
        let out = Command::new("ip").args(args).output().expect("run ip");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ip {}: {stderr}", args.join(" "));
        String::from_utf8(out.stdout).expect("ip prints UTF-8")
    }

    /// The flags between `<` and `>` in `ip link show`.
    fn link_flags(show: &str) -> Vec<&str> {
        let start = show.find('<').expect("flags start") + 1;
        let end = show.find('>').expect("flags end");
        show[start..end].split(',').collect()
    }

    fn lines_with<'a>(out: &'a str, needle: &str) -> Vec<&'a str> {
        out.lines()
            .filter(|l| l.contains(needle))
            .map(str::trim)
            .collect()
    }

    #[test]
    fn link_up_mtu_mac() {
        let ns = NetNs::new("link");
        let mut nl = ns.netlink();
        let a = ns.index(&mut nl, "a");
        assert_eq!(nl.link_index("nosuchdev").unwrap(), None);

        nl.set_link(a, true, Some(1400), Some(MAC)).unwrap();
        let show = ns.ip(&["link", "show", "dev", "a"]);
        assert!(link_flags(&show).contains(&"UP"), "{show}");
        assert!(show.contains(" mtu 1400 "), "{show}");
        assert!(show.contains("link/ether 02:42:0a:f4:02:00 "), "{show}");

        nl.set_link(a, false, None, None).unwrap();
        let show = ns.ip(&["link", "show", "dev", "a"]);
        assert!(!link_flags(&show).contains(&"UP"), "{show}");
        assert!(
            show.contains(" mtu 1400 "),
            "down must leave the mtu alone: {show}"
        );
    }

    #[test]
    fn addr_add_is_idempotent_and_visible_to_host_has_addr() {
        let ns = NetNs::new("addr");
        let mut nl = ns.netlink();
        let a = ns.index(&mut nl, "a");
        let addr = Ipv4Addr::new(10, 244, 1, 0);

        assert!(!nl.host_has_addr(addr).unwrap());
        nl.add_addr(a, addr, 32).unwrap();
        nl.add_addr(a, addr, 32).unwrap();
        let show = ns.ip(&["addr", "show", "dev", "a"]);
        assert_eq!(lines_with(&show, "inet ").len(), 1, "{show}");
        assert!(show.contains("inet 10.244.1.0/32 scope global a"), "{show}");
        assert!(nl.host_has_addr(addr).unwrap());
        assert!(!nl.host_has_addr(Ipv4Addr::new(10, 244, 1, 1)).unwrap());

        nl.del_addr(a, addr, 32).unwrap();
        nl.del_addr(a, addr, 32).unwrap();
        assert!(!ns.ip(&["addr", "show", "dev", "a"]).contains("inet "));
        assert!(!nl.host_has_addr(addr).unwrap());
    }

    #[test]
    fn onlink_route_add_replace_dump_del() {
        let ns = NetNs::new("route");
        let mut nl = ns.netlink();
        let (a, b) = (ns.index(&mut nl, "a"), ns.index(&mut nl, "b"));
        // The kernel refuses an onlink next hop on a device that is down.
        nl.set_link(b, true, None, None).unwrap();
        nl.set_link(a, true, None, None).unwrap();

        let subnet = Ipv4Addr::new(10, 244, 2, 0);
        let mut vxlan = Route {
            dst: subnet,
            prefix_len: 24,
            gateway: Some(subnet),
            ifindex: a,
            onlink: true,
        };
        nl.add_route(&vxlan).unwrap();
        nl.add_route(&vxlan).unwrap();
        let show = ns.ip(&["route", "show"]);
        let lines = lines_with(&show, "10.244.2.0/24");
        assert_eq!(lines.len(), 1, "{show}");
        assert!(
            lines[0].starts_with("10.244.2.0/24 via 10.244.2.0 dev a proto 118 onlink"),
            "{show}"
        );

        // Replace: same prefix, new next hop; still one route.
        vxlan.gateway = Some(Ipv4Addr::new(10, 244, 2, 1));
        nl.add_route(&vxlan).unwrap();
        let show = ns.ip(&["route", "show"]);
        let lines = lines_with(&show, "10.244.2.0/24");
        assert_eq!(lines.len(), 1, "{show}");
        assert!(
            lines[0].starts_with("10.244.2.0/24 via 10.244.2.1 dev a proto 118 onlink"),
            "{show}"
        );

        // A host-gw route next to it; its gateway must be on a connected subnet.
        nl.add_addr(a, Ipv4Addr::new(192, 0, 2, 1), 24).unwrap();
        let gw = Route {
            dst: Ipv4Addr::new(10, 244, 3, 0),
            prefix_len: 24,
            gateway: Some(Ipv4Addr::new(192, 0, 2, 2)),
            ifindex: a,
            onlink: false,
        };
        nl.add_route(&gw).unwrap();
        let show = ns.ip(&["route", "show"]);
        assert!(
            show.contains("10.244.3.0/24 via 192.0.2.2 dev a proto 118 \n"),
            "{show}"
        );

        let mut ours = nl.routes_by_protocol(RTPROT_VTEPD).unwrap();
        ours.sort_by_key(|r| r.dst);
        assert_eq!(ours, vec![vxlan, gw]);
        let connected = Route {
            dst: Ipv4Addr::new(192, 0, 2, 0),
            prefix_len: 24,
            gateway: None,
            ifindex: a,
            onlink: false,
        };
        assert_eq!(
            nl.routes_by_protocol(libc::RTPROT_KERNEL).unwrap(),
            vec![connected]
        );

        // Deleting someone else's route is refused quietly: it does not carry our protocol.
        nl.del_route(&connected).unwrap();
        assert!(ns
            .ip(&["route", "show"])
            .contains("192.0.2.0/24 dev a proto kernel"));

        for r in [vxlan, gw, vxlan] {
            nl.del_route(&r).unwrap();
        }
        let show = ns.ip(&["route", "show"]);
        assert!(!show.contains("10.244."), "{show}");
        assert_eq!(nl.routes_by_protocol(RTPROT_VTEPD).unwrap(), vec![]);
    }

    #[test]
    fn neigh_permanent_add_replace_del() {
        let ns = NetNs::new("neigh");
        let mut nl = ns.netlink();
        let a = ns.index(&mut nl, "a");
        let ip = Ipv4Addr::new(10, 244, 2, 0);

        nl.add_neigh(a, ip, MAC).unwrap();
        let show = ns.ip(&["neigh", "show", "dev", "a"]);
        assert_eq!(
            show.trim(),
            "10.244.2.0 lladdr 02:42:0a:f4:02:00 PERMANENT",
            "{show}"
        );

        nl.add_neigh(a, ip, MAC2).unwrap();
        let show = ns.ip(&["neigh", "show", "dev", "a"]);
        assert_eq!(
            show.trim(),
            "10.244.2.0 lladdr 02:42:0a:f4:02:01 PERMANENT",
            "{show}"
        );

        nl.del_neigh(a, ip).unwrap();
        nl.del_neigh(a, ip).unwrap();
        assert_eq!(ns.ip(&["neigh", "show", "dev", "a"]).trim(), "");
    }

    #[test]
    fn missing_ifindex_errors_name_the_operation() {
        let ns = NetNs::new("errors");
        let mut nl = ns.netlink();
        let missing = 999_999;

        let err = nl.set_link(missing, true, Some(1400), None).unwrap_err();
        assert_eq!(err.to_string(), "set link dev 999999 up mtu 1400");
        assert_eq!(err.errno(), Some(libc::ENODEV));

        let subnet = Ipv4Addr::new(10, 244, 2, 0);
        let r = Route {
            dst: subnet,
            prefix_len: 24,
            gateway: Some(subnet),
            ifindex: missing,
            onlink: true,
        };
        let err = nl.add_route(&r).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("add route 10.244.2.0/24 via 10.244.2.0 dev 999999 onlink"),
            "{msg}"
        );
        assert_eq!(err.errno(), Some(libc::ENODEV), "{msg}");

        let err = nl
            .add_addr(missing, Ipv4Addr::new(10, 244, 1, 0), 32)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("add address 10.244.1.0/32 dev 999999"),
            "{err}"
        );
        assert_eq!(err.errno(), Some(libc::ENODEV));

        // Tolerating "already gone" must not hide a missing device.
        let err = nl
            .del_addr(missing, Ipv4Addr::new(10, 244, 1, 0), 32)
            .unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENODEV), "{err}");
        let err = nl.add_neigh(missing, subnet, MAC).unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENODEV), "{err}");

        // The socket is still in step after errors: the next request gets its own answer.
        assert!(ns.index(&mut nl, "a") > 0);
    }

    #[test]
    fn kernel_reason_is_reported() {
        let ns = NetNs::new("extack");
        let mut nl = ns.netlink();
        let a = ns.index(&mut nl, "a");
        nl.set_link(a, true, None, None).unwrap();
        // No connected subnet covers the gateway and the route is not onlink.
        let gw = Ipv4Addr::new(198, 51, 100, 1);
        let r = Route {
            dst: Ipv4Addr::new(10, 244, 3, 0),
            prefix_len: 24,
            gateway: Some(gw),
            ifindex: a,
            onlink: false,
        };
        let err = nl.add_route(&r).unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENETUNREACH), "{err}");
        assert!(
            matches!(
                &err,
                NetlinkError::Kernel {
                    extack: Some(_),
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn invalid_arguments_are_refused_locally() {
        let mut nl = Netlink::open().unwrap();
        let err = nl.link_index("a-name-longer-than-15").unwrap_err();
        assert!(matches!(err, NetlinkError::Invalid { .. }), "{err:?}");
        let err = nl
            .add_addr(1, Ipv4Addr::new(10, 244, 1, 0), 33)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "add address 10.244.1.0/33 dev 1: an IPv4 prefix length is at most 32"
        );
        let r = Route {
            dst: Ipv4Addr::new(10, 244, 2, 0),
            prefix_len: 24,
            gateway: None,
            ifindex: 1,
            onlink: true,
        };
        let err = nl.add_route(&r).unwrap_err();
        assert_eq!(
            err.to_string(),
            "add route 10.244.2.0/24 dev 1 onlink: onlink needs a gateway"
        );
    }

    #[test]
    fn attributes_are_aligned_and_lengths_patched() {
        let mut req = Request::new(RTM_SETLINK, 0, &ifinfomsg(7, IFF_UP, IFF_UP));
        req.attr(IFLA_IFNAME, b"ab\0")
            .attr(IFLA_MTU, &1400_u32.to_ne_bytes());
        let bytes = req.finish(42).to_vec();
        // 16 header + 16 ifinfomsg + (4 + 3 -> 8) + (4 + 4)
        assert_eq!(bytes.len(), 48);
        assert_eq!(ne_u32(Some(&bytes)), Some(48));
        assert_eq!(ne_u32(Some(&bytes[8..])), Some(42));
        assert_eq!(
            u16::from_ne_bytes([bytes[6], bytes[7]]),
            NLM_F_REQUEST | NLM_F_ACK
        );
        assert_eq!(
            &bytes[32..34],
            &7_u16.to_ne_bytes(),
            "nla_len counts the payload, not the padding"
        );
        assert_eq!(
            &bytes[36..40],
            b"ab\0\0",
            "payload padded with zeros to 4 bytes"
        );
        let attrs: Vec<_> = Attrs(&bytes[32..]).collect();
        assert_eq!(
            attrs,
            vec![
                (IFLA_IFNAME, &b"ab\0"[..]),
                (IFLA_MTU, &1400_u32.to_ne_bytes()[..])
            ]
        );
    }

    /// An `NLMSG_ERROR` as a kernel with `NETLINK_CAP_ACK` and `NETLINK_EXT_ACK` sends it.
    fn error_message(errno: i32, text: &[u8]) -> Vec<u8> {
        let mut echoed = Request::new(RTM_NEWROUTE, 0, &[]);
        let mut payload = (-errno).to_ne_bytes().to_vec();
        payload.extend_from_slice(echoed.finish(5));
        let mut tlvs = Request::new(0, 0, &[]);
        tlvs.attr(NLMSGERR_ATTR_MSG, text);
        payload.extend_from_slice(&tlvs.buf[NLMSG_HDRLEN..]);
        let mut msg = Request::new(NLMSG_ERROR, 0, &payload);
        let flags = NLM_F_CAPPED | NLM_F_ACK_TLVS;
        msg.buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        msg.finish(5).to_vec()
    }

    #[test]
    fn error_with_extack_is_parsed() {
        let bytes = error_message(libc::EINVAL, b"Invalid prefix for given prefix length\0");
        let msg = Messages(&bytes).next().unwrap().unwrap();
        assert_eq!((msg.ty, msg.seq), (NLMSG_ERROR, 5));
        let r = Route {
            dst: Ipv4Addr::new(10, 244, 2, 1),
            prefix_len: 24,
            gateway: None,
            ifindex: 3,
            onlink: false,
        };
        let err = end_of_exchange(&Op::AddRoute(r), &msg).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EINVAL));
        assert_eq!(
            err.to_string(),
            "add route 10.244.2.1/24 dev 3 (kernel: Invalid prefix for given prefix length)"
        );
    }

    #[test]
    fn truncated_messages_are_refused() {
        let mut bytes = error_message(libc::EINVAL, b"x\0");
        bytes[0] = 200; // nlmsg_len beyond the datagram
        assert!(Messages(&bytes).next().unwrap().is_err());
        assert!(Messages(&bytes[..10]).next().unwrap().is_err());
    }
}
