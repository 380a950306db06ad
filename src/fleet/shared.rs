//! One socket for many loopback addresses: bound to a port on every
//! address, it learns each datagram's destination and sends from any
//! local address, with IP_PKTINFO.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use mio::net::UdpSocket;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg, sendmsg, setsockopt,
    sockopt,
};

fn nix_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

pub(super) fn bind(port: u16) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port)))?;
    setsockopt(&s, sockopt::Ipv4PacketInfo, &true).map_err(nix_err)?;
    // Every agent's traffic through one buffer: as large as allowed
    // (past rmem_max when privileged).
    if setsockopt(&s, sockopt::RcvBufForce, &(64 << 20)).is_err() {
        let _ = socket2::SockRef::from(&s).set_recv_buffer_size(64 << 20);
    }
    let _ = socket2::SockRef::from(&s).set_send_buffer_size(8 << 20);
    Ok(s)
}

/// Sends `data` to `to` from the loopback address `from`.
pub(super) fn send_from(
    s: &UdpSocket,
    from: SocketAddr,
    data: &[u8],
    to: SocketAddr,
) -> io::Result<()> {
    let (IpAddr::V4(src), SocketAddr::V4(dst)) = (from.ip(), to) else {
        return Err(io::ErrorKind::Unsupported.into());
    };
    let info = libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(src).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let dest = SockaddrIn::from(dst);
    sendmsg(
        s.as_raw_fd(),
        &[IoSlice::new(data)],
        &[ControlMessage::Ipv4PacketInfo(&info)],
        MsgFlags::MSG_DONTWAIT,
        Some(&dest),
    )
    .map(|_| ())
    .map_err(nix_err)
}

/// One datagram: its length, its source and the address it was sent
/// to.
pub(super) fn recv(s: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, IpAddr)> {
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
    let mut iov = [IoSliceMut::new(buf)];
    let m = recvmsg::<SockaddrIn>(
        s.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(nix_err)?;
    let mut to = None;
    for c in m.cmsgs().map_err(nix_err)? {
        if let ControlMessageOwned::Ipv4PacketInfo(i) = c {
            to = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(i.ipi_addr.s_addr))));
        }
    }
    let from = m
        .address
        .map(|a| SocketAddr::V4(SocketAddrV4::new(a.ip(), a.port())))
        .ok_or_else(|| io::Error::other("no source address"))?;
    let to = to.ok_or_else(|| io::Error::other("no destination address"))?;
    Ok((m.bytes, from, to))
}
