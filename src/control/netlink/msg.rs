//! The wire format: requests built attribute by attribute, replies walked message by message,
//! and the few family headers vtepd sends and reads.
use std::net::Ipv4Addr;

use super::uapi::*;
use super::{Link, Route, RTPROT_VTEPD};

pub(super) fn addr_request(ty: u16, flags: u16, ifindex: u32, addr: Ipv4Addr, prefix_len: u8) -> Request {
    let mut req = Request::new(ty, flags, &ifaddrmsg(AF_INET, prefix_len, ifindex));
    // IFA_LOCAL is the address itself; IFA_ADDRESS is the peer on point-to-point links and
    // the same address elsewhere. `ip addr add` sends both.
    req.attr(IFA_LOCAL, &addr.octets())
        .attr(IFA_ADDRESS, &addr.octets());
    req
}

pub(super) fn route_request(ty: u16, flags: u16, r: &Route, scope: u8) -> Request {
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
pub(super) fn parse_addr(ty: u16, payload: &[u8]) -> Result<Option<Ipv4Addr>, &'static str> {
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
pub(super) fn parse_route(ty: u16, payload: &[u8], proto: u8) -> Result<Option<Route>, &'static str> {
    Ok(parse_main_route(ty, payload)?.filter(|m| m.proto == proto).and_then(|m| m.route))
}

/// A route of the main IPv4 table, of any protocol and type: what vtepd needs to know of one it
/// meets at a prefix it wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MainRoute {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    pub proto: u8,
    /// `RTN_*`: unicast, blackhole, unreachable, local...
    pub kind: u8,
    /// `None` for what a [`Route`] cannot describe: a type other than unicast, or several next hops.
    pub route: Option<Route>,
}

impl std::fmt::Display for MainRoute {
    /// As `ip route` prints the type, where a [`Route`] cannot say it all.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(r) = self.route {
            return write!(f, "{r}");
        }
        let kind = match self.kind {
            RTN_UNICAST => "multipath",
            2 => "local",
            3 => "broadcast",
            4 => "anycast",
            5 => "multicast",
            6 => "blackhole",
            7 => "unreachable",
            8 => "prohibit",
            9 => "throw",
            _ => "type",
        };
        write!(f, "{kind} {}/{}", self.dst, self.prefix_len)
    }
}

pub(super) fn parse_main_route(ty: u16, payload: &[u8]) -> Result<Option<MainRoute>, &'static str> {
    let rtm = RtMsg::decode(payload).ok_or("short rtmsg")?;
    if ty != RTM_NEWROUTE || rtm.family != AF_INET {
        return Ok(None);
    }
    let mut table = u32::from(rtm.table);
    let (mut dst, mut gateway, mut oif, mut multipath) = (Ipv4Addr::UNSPECIFIED, None, None, false);
    for (ty, value) in Attrs(&payload[RtMsg::LEN..]) {
        match ty {
            // rtm_table is one byte; RTA_TABLE holds the real number.
            RTA_TABLE => table = ne_u32(Some(value)).ok_or("short RTA_TABLE")?,
            RTA_DST => dst = ipv4(value)?,
            RTA_GATEWAY => gateway = Some(ipv4(value)?),
            RTA_OIF => oif = Some(ne_u32(Some(value)).ok_or("short RTA_OIF")?),
            RTA_MULTIPATH => multipath = true,
            _ => {}
        }
    }
    if table != u32::from(RT_TABLE_MAIN) {
        return Ok(None);
    }
    let onlink = rtm.flags & RTNH_F_ONLINK != 0;
    let single = oif.filter(|_| rtm.kind == RTN_UNICAST && !multipath);
    let route = single.map(|ifindex| Route { dst, prefix_len: rtm.dst_len, gateway, ifindex, onlink });
    Ok(Some(MainRoute { dst, prefix_len: rtm.dst_len, proto: rtm.protocol, kind: rtm.kind, route }))
}

pub(super) fn ipv4(value: &[u8]) -> Result<Ipv4Addr, &'static str> {
    <[u8; 4]>::try_from(value)
        .map(Ipv4Addr::from)
        .map_err(|_| "IPv4 attribute is not 4 bytes")
}

pub(super) fn ne_u32(bytes: Option<&[u8]>) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes?.get(..4)?.try_into().ok()?))
}

/// `NLMSG_ALIGN` and `NLA_ALIGN`: both round up to 4 bytes.
pub(super) const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// A request being built: `struct nlmsghdr`, the family header, then attributes, each padded to
/// 4 bytes. Length and sequence number are filled in by [`Request::finish`].
#[derive(Debug)]
pub(super) struct Request {
    pub(super) buf: Vec<u8>,
}

impl Request {
    /// Every request asks for an ack, so that errors and completion are never silent.
    pub(super) fn new(ty: u16, flags: u16, header: &[u8]) -> Self {
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
    pub(super) fn attr(&mut self, ty: u16, payload: &[u8]) -> &mut Self {
        let len = u16::try_from(NLA_HDRLEN + payload.len()).expect("attribute payloads are small");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// The request as sent under sequence number `seq`. May be called again for a retry.
    pub(super) fn finish(&mut self, seq: u32) -> &[u8] {
        let len = u32::try_from(self.buf.len()).expect("requests are small");
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        &self.buf
    }
}

/// `struct ifinfomsg`, family unspecified.
pub(super) fn ifinfomsg(ifindex: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut h = vec![AF_UNSPEC, 0, 0, 0]; // ifi_family, pad, ifi_type
    for field in [ifindex, flags, change] {
        h.extend_from_slice(&field.to_ne_bytes());
    }
    h
}

pub(super) const IFINFOMSG_LEN: usize = 16;

/// A [`Link`] from an `RTM_NEWLINK`.
pub(super) fn parse_link(payload: &[u8]) -> Result<Link, &'static str> {
    let index = ne_u32(payload.get(4..)).ok_or("short ifinfomsg")?;
    let (mut mtu, mut operstate) = (None, None);
    for (ty, value) in Attrs(payload.get(IFINFOMSG_LEN..).ok_or("short ifinfomsg")?) {
        match ty {
            IFLA_MTU => mtu = Some(ne_u32(Some(value)).ok_or("short IFLA_MTU")?),
            IFLA_OPERSTATE => operstate = Some(*value.first().ok_or("short IFLA_OPERSTATE")?),
            _ => {}
        }
    }
    let up = matches!(operstate, Some(IF_OPER_UP | IF_OPER_UNKNOWN) | None);
    Ok(Link { index, mtu: mtu.ok_or("no IFLA_MTU")?, up })
}

pub(super) const IFADDRMSG_LEN: usize = 8;

/// `struct ifaddrmsg`: family, prefix length, flags, scope, ifindex.
pub(super) fn ifaddrmsg(family: u8, prefix_len: u8, ifindex: u32) -> Vec<u8> {
    let mut h = vec![family, prefix_len, 0, RT_SCOPE_UNIVERSE];
    h.extend_from_slice(&ifindex.to_ne_bytes());
    h
}

/// `struct ndmsg` for IPv4: family, padding, ifindex, state, flags, type.
pub(super) fn ndmsg(ifindex: u32, state: u16) -> Vec<u8> {
    let mut h = vec![AF_INET, 0, 0, 0];
    h.extend_from_slice(&ifindex.to_ne_bytes());
    h.extend_from_slice(&state.to_ne_bytes());
    h.extend_from_slice(&[0, 0]);
    h
}

/// `struct rtmsg`.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct RtMsg {
    pub(super) family: u8,
    pub(super) dst_len: u8,
    pub(super) table: u8,
    pub(super) protocol: u8,
    pub(super) scope: u8,
    pub(super) kind: u8,
    pub(super) flags: u32,
}

impl RtMsg {
    pub(super) const LEN: usize = 12;

    pub(super) fn encode(&self) -> Vec<u8> {
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

    pub(super) fn decode(b: &[u8]) -> Option<Self> {
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
pub(super) struct Msg<'a> {
    pub(super) ty: u16,
    pub(super) flags: u16,
    pub(super) seq: u32,
    pub(super) payload: &'a [u8],
}

/// The messages in a datagram. A length that does not fit ends the iteration with an error.
pub(super) struct Messages<'a>(pub(super) &'a [u8]);

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
pub(super) struct Attrs<'a>(pub(super) &'a [u8]);

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
