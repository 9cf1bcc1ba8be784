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
//!
//! Here: the client ([`Netlink`]); `msg`, the wire format; `error`, what a call fails with;
//! `uapi`, the kernel's constants. The socket's system calls are in `crate::io::netlink`.
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use tracing::{debug, trace};

use crate::io::netlink as sys;

mod error;
mod msg;
#[cfg(test)]
mod tests;
mod uapi;

pub use error::{NetlinkError, Op};
use error::end_of_exchange;
use msg::*;
use uapi::*;

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

/// What vtepd reads of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub mtu: u32,
    /// Operationally up; "unknown", which devices without carrier reporting show, counts as up.
    pub up: bool,
}

/// An IPv4 unicast route in the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
        // of a failed request to its header. Strict checking makes the kernel apply a dump
        // request's filters (table, protocol) instead of sending every route of every table, which
        // on a host with a full BGP table is a million messages per route check. Kernels before
        // 4.12 (4.20 for strict checking) refuse these; they work without them, only with terser
        // errors and unfiltered dumps (filtered here as well), so a refusal is logged and ignored.
        for opt in [libc::NETLINK_EXT_ACK, libc::NETLINK_CAP_ACK, NETLINK_GET_STRICT_CHK] {
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
        Ok(self.link(name)?.map(|l| l.index))
    }

    /// The interface called `name` in this socket's network namespace, or `None` if there is
    /// none. (Not sysfs: /sys shows the namespace it was mounted in, which a process that entered
    /// another one with `nsenter --net` does not share.)
    pub fn link(&mut self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let op = Op::LinkIndex {
            name: name.to_owned(),
        };
        if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
            let reason = "an interface name is 1 to 15 bytes without NUL";
            return Err(NetlinkError::Invalid { op, reason });
        }
        let mut req = Request::new(RTM_GETLINK, 0, &ifinfomsg(0, 0, 0));
        req.attr(IFLA_IFNAME, &[name.as_bytes(), &[0]].concat());
        let mut link = None;
        let res = self.exchange(&op, &mut req, &mut |ty, payload| {
            if ty == RTM_NEWLINK {
                link = Some(parse_link(payload)?);
            }
            Ok(())
        });
        match res {
            Ok(_) if link.is_none() => Err(NetlinkError::Malformed {
                op,
                what: "no link in reply",
            }),
            Ok(_) => Ok(link),
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

    /// Installs the route in the main table with protocol [`RTPROT_VTEPD`]. A route to the same
    /// prefix that is already there is replaced only if it is ours — [`RTPROT_VTEPD`] on the same
    /// device (a restart, a changed peer); anyone else's (the underlay's connected route, an
    /// operator's, another vtepd's on its own device) is left alone and the add fails with
    /// [`NetlinkError::RouteTaken`]. Routes with a gateway get scope universe. Device routes get
    /// scope link, as `ip route add` gives them, so that they can resolve the gateways of other
    /// routes: the kernel looks a gateway up only among routes of a narrower scope than the route
    /// using it.
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
        let mut req = route_request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, r, scope);
        match self.ack(&op, &mut req) {
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            done => return done,
        }
        // Only vtepd's own route on the same device is replaced; anything else there — another
        // protocol's, another device's, a blackhole, a multipath route — is left alone.
        if let Some(existing) = self.main_route(r.dst, r.prefix_len)? {
            let ours = existing.proto == RTPROT_VTEPD && existing.route.is_some_and(|e| e.ifindex == r.ifindex);
            if !ours {
                return Err(NetlinkError::RouteTaken { route: *r, proto: existing.proto, existing: existing.to_string() });
            }
        }
        let mut req = route_request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, r, scope);
        self.ack(&op, &mut req)
    }

    /// The main table's route to exactly `dst/prefix_len`, of any protocol and type.
    fn main_route(&mut self, dst: Ipv4Addr, prefix_len: u8) -> Result<Option<MainRoute>, NetlinkError> {
        let rtm = RtMsg { family: AF_INET, table: RT_TABLE_MAIN, ..RtMsg::default() };
        let mut req = Request::new(RTM_GETROUTE, NLM_F_DUMP, &rtm.encode());
        let all = self.dump(&Op::DumpRoutes { proto: 0 }, &mut req, parse_main_route)?;
        Ok(all.into_iter().find(|m| m.dst == dst && m.prefix_len == prefix_len))
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
        // The kernel applies the table and protocol filters under NETLINK_GET_STRICT_CHK only, so
        // `parse_route` filters as well.
        let rtm = RtMsg { family: AF_INET, table: RT_TABLE_MAIN, protocol: proto, ..RtMsg::default() };
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
