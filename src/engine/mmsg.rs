//! `recvmmsg(2)` and `sendmmsg(2)`, straight into and out of ring slots:
//! the small audited wrapper the io loop uses. All `unsafe` of the engine is
//! here.
//!
//! Contracts quoted from the man pages:
//! - recvmmsg: "The msgvec argument is a pointer to an array of mmsghdr
//!   structures. The size of this array is specified in vlen." On return
//!   "the msg_len field is updated to contain the number of bytes received"
//!   for each of the first (return value) entries. `msg_namelen` is updated
//!   to the address's real length; `MSG_TRUNC` in `msg_flags` says the
//!   datagram was longer than the buffer.
//! - sendmmsg: sends the first vlen messages; "returns the number of
//!   messages sent from msgvec; if this is less than vlen, the caller can
//!   retry with a further sendmmsg() call to send the remaining messages."

#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use crate::ring_buffer::{SLOT_ADDR_LEN, SlotMeta, WriteBatch};

/// Datagrams per system call at most.
pub const MMSG_BATCH_MAX: usize = 64;

/// `SlotMeta::flags` bit: the datagram was longer than the slot and its
/// tail is lost (no spill area, or the spill queue was full).
pub const SLOT_TRUNCATED: u32 = 1;
/// `SlotMeta::flags` bit: the datagram was longer than the slot; `len` is
/// its whole length and the bytes past the slot are in the spill area's
/// chunk of the same index (see [`SpillArea`]).
pub const SLOT_SPILLED: u32 = 2;

/// Bytes of a spill chunk: with the slot in front of it, any UDP datagram
/// (65,507 bytes of payload at most) fits whole.
pub const SPILL_CHUNK: usize = 64 << 10;

/// Where the tails of datagrams longer than a slot land: one chunk per
/// message of a `recvmmsg` batch (4 MiB), allocated once. A slot and its
/// chunk are one scatter list, so a long datagram is never cut.
pub struct SpillArea(Box<[u8]>);

impl Default for SpillArea {
    fn default() -> Self {
        SpillArea(vec![0u8; SPILL_CHUNK * MMSG_BATCH_MAX].into_boxed_slice())
    }
}

impl SpillArea {
    /// The tail bytes of message `i` of the last batch (`len` bytes).
    pub fn tail(&self, i: usize, len: usize) -> &[u8] {
        &self.0[i * SPILL_CHUNK..][..len.min(SPILL_CHUNK)]
    }
}

/// Space for one `SO_RXQ_OVFL` control message (a u32).
const CMSG_BUF_LEN: usize = 32;

const _: () = assert!(size_of::<libc::sockaddr_in6>() <= SLOT_ADDR_LEN);
const _: () = assert!(align_of::<SlotMeta>() >= align_of::<libc::sockaddr_in6>());

/// What one receive call saw besides the datagrams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecvInfo {
    /// Datagrams received into slots.
    pub received: usize,
    /// The socket's cumulative kernel drop count (`SO_RXQ_OVFL`), when a
    /// datagram carried it.
    pub kernel_drops: Option<u32>,
}

#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_BUF_LEN]);

/// Receives up to `batch.len()` (at most `MMSG_BATCH_MAX`) datagrams from a
/// non-blocking socket into the batch's first slots, without blocking.
/// Returns how many arrived (0 when none were waiting); the caller commits
/// them. `now_ns` is stamped on each. With a `spill` area, a datagram
/// longer than a slot continues into its chunk there and is flagged
/// [`SLOT_SPILLED`] with its whole length; without, it is cut and flagged
/// [`SLOT_TRUNCATED`]. EINTR is retried; only EAGAIN means "nothing".
pub fn recv_into(
    fd: RawFd,
    batch: &mut WriteBatch<'_>,
    slot_size: usize,
    now_ns: u64,
    mut spill: Option<&mut SpillArea>,
) -> io::Result<RecvInfo> {
    let n = batch.len().min(MMSG_BATCH_MAX);
    if n == 0 {
        return Ok(RecvInfo::default());
    }
    // SAFETY: these C structs are plain data for which all-zero is a valid
    // value (null pointers, zero lengths).
    let mut hdrs: [libc::mmsghdr; MMSG_BATCH_MAX] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut iovs: [[libc::iovec; 2]; MMSG_BATCH_MAX] = unsafe { zeroed() };
    let mut cmsgs: [CmsgBuf; MMSG_BATCH_MAX] = std::array::from_fn(|_| CmsgBuf([0; CMSG_BUF_LEN]));
    let mut metas: [*mut SlotMeta; MMSG_BATCH_MAX] = [std::ptr::null_mut(); MMSG_BATCH_MAX];
    for i in 0..n {
        let (buf, meta) = batch.slot_ptrs(i);
        metas[i] = meta;
        iovs[i][0] = libc::iovec {
            iov_base: buf.cast(),
            iov_len: slot_size,
        };
        let mut iovlen = 1;
        if let Some(area) = spill.as_deref_mut() {
            iovs[i][1] = libc::iovec {
                iov_base: area.0[i * SPILL_CHUNK..].as_mut_ptr().cast(),
                iov_len: SPILL_CHUNK,
            };
            iovlen = 2;
        }
        let h = &mut hdrs[i].msg_hdr;
        // SAFETY: `meta` points to a live SlotMeta of the batch (valid until
        // commit); we take the address of its `addr` field without creating
        // a reference to the whole struct.
        h.msg_name = unsafe { std::ptr::addr_of_mut!((*meta).addr) }.cast();
        h.msg_namelen = SLOT_ADDR_LEN as libc::socklen_t;
        h.msg_iov = iovs[i].as_mut_ptr();
        h.msg_iovlen = iovlen;
        h.msg_control = cmsgs[i].0.as_mut_ptr().cast();
        h.msg_controllen = CMSG_BUF_LEN as _;
    }
    let got = loop {
        // SAFETY: `hdrs[..n]` are initialised mmsghdrs whose buffers (slot
        // buffers of `slot_size` bytes, spill chunks of SPILL_CHUNK bytes
        // inside the exclusively borrowed area, slot address fields of
        // SLOT_ADDR_LEN bytes, control buffers of CMSG_BUF_LEN bytes) are
        // valid for writes for the duration of the call: the slots belong
        // to the producer until commit, the rest live on this stack frame
        // or in `spill`, borrowed for the whole call.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got >= 0 {
            break got;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(RecvInfo::default()),
            _ => return Err(e),
        }
    };
    let got = got as usize;
    let mut info = RecvInfo {
        received: got,
        kernel_drops: None,
    };
    for i in 0..got {
        let h = &hdrs[i];
        if let Some(d) = rxq_ovfl(&h.msg_hdr) {
            info.kernel_drops = Some(d);
        }
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let len = h.msg_len as usize;
        // SAFETY: `metas[i]` points to the batch's slot i metadata, which
        // only this producer may touch before commit; the kernel finished
        // writing its `addr` field when recvmmsg returned.
        let meta = unsafe { &mut *metas[i] };
        let spilled = spill.is_some() && len > slot_size && !truncated;
        meta.len = if spilled { len } else { len.min(slot_size) } as u32;
        meta.flags = if spilled {
            SLOT_SPILLED
        } else if truncated || len > slot_size {
            SLOT_TRUNCATED
        } else {
            0
        };
        meta.recv_ns = now_ns;
        meta.addr_len = h.msg_hdr.msg_namelen.min(SLOT_ADDR_LEN as libc::socklen_t);
    }
    Ok(info)
}

/// The `SO_RXQ_OVFL` count carried by a received message, if any.
fn rxq_ovfl(h: &libc::msghdr) -> Option<u32> {
    // SAFETY: `h` was filled by recvmmsg, so its control buffer pointer and
    // length describe initialised memory; CMSG_FIRSTHDR/NXTHDR stay inside
    // `msg_controllen` and we read the data with an unaligned read.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_RXQ_OVFL {
                return Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<u32>()));
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// The sender address stored in a slot.
pub fn slot_addr(meta: &SlotMeta) -> Option<SocketAddr> {
    let a = &meta.addr;
    let family = i32::from(u16::from_ne_bytes([a[0], a[1]]));
    let port = u16::from_be_bytes([a[2], a[3]]);
    match family {
        libc::AF_INET if meta.addr_len as usize >= size_of::<libc::sockaddr_in>() => {
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(a[4], a[5], a[6], a[7]),
                port,
            )))
        }
        libc::AF_INET6 if meta.addr_len as usize >= size_of::<libc::sockaddr_in6>() => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&a[8..24]);
            let scope = u32::from_ne_bytes([a[24], a[25], a[26], a[27]]);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                0,
                scope,
            )))
        }
        _ => None,
    }
}

/// Writes `addr` as a `sockaddr_in`/`sockaddr_in6` into `out`; returns its length.
pub fn encode_sockaddr(addr: &SocketAddr, out: &mut [u8; SLOT_ADDR_LEN]) -> u32 {
    out.fill(0);
    out[2..4].copy_from_slice(&addr.port().to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            out[4..8].copy_from_slice(&ip.octets());
            size_of::<libc::sockaddr_in>() as u32
        }
        IpAddr::V6(ip) => {
            out[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            out[8..24].copy_from_slice(&ip.octets());
            if let SocketAddr::V6(v6) = addr {
                out[24..28].copy_from_slice(&v6.scope_id().to_ne_bytes());
            }
            size_of::<libc::sockaddr_in6>() as u32
        }
    }
}

/// A datagram to send.
pub struct Outgoing<'a> {
    /// Its bytes.
    pub data: &'a [u8],
    /// Its destination, encoded by [`encode_sockaddr`].
    pub addr: &'a [u8; SLOT_ADDR_LEN],
    /// Bytes of `addr` in use.
    pub addr_len: u32,
}

/// Sends up to `MMSG_BATCH_MAX` datagrams with one `sendmmsg` on a
/// non-blocking socket; returns how many left (0 if the socket buffer is
/// full).
pub fn send_batch(fd: RawFd, msgs: &[Outgoing<'_>]) -> io::Result<usize> {
    let n = msgs.len().min(MMSG_BATCH_MAX);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: plain C data, all-zero is valid.
    let mut hdrs: [libc::mmsghdr; MMSG_BATCH_MAX] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut iovs: [libc::iovec; MMSG_BATCH_MAX] = unsafe { zeroed() };
    for (i, m) in msgs[..n].iter().enumerate() {
        iovs[i] = libc::iovec {
            iov_base: m.data.as_ptr() as *mut libc::c_void,
            iov_len: m.data.len(),
        };
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = m.addr.as_ptr() as *mut libc::c_void;
        h.msg_namelen = m.addr_len;
        h.msg_iov = &mut iovs[i];
        h.msg_iovlen = 1;
    }
    loop {
        // SAFETY: `hdrs[..n]` point to buffers borrowed from `msgs` (alive
        // for the call) which sendmmsg only reads despite the `*mut` in its
        // types.
        let sent =
            unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
        if sent >= 0 {
            return Ok(sent as usize);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            // A signal before anything was sent: nothing was, try again.
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(0),
            _ => return Err(e),
        }
    }
}

/// Receives and discards up to `MMSG_BATCH_MAX` datagrams into one scratch
/// buffer (the bare reference loop, and the io loop when its ring is full).
/// `flags` may add `MSG_WAITFORONE` on a blocking socket.
pub fn recv_discard(fd: RawFd, scratch: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: plain C data, all-zero is valid.
    let mut hdrs: [libc::mmsghdr; MMSG_BATCH_MAX] = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: scratch.as_mut_ptr().cast(),
        iov_len: scratch.len(),
    };
    for h in hdrs.iter_mut() {
        // Every message lands in the same scratch buffer: only the count
        // matters.
        h.msg_hdr.msg_iov = &mut iov;
        h.msg_hdr.msg_iovlen = 1;
    }
    loop {
        // SAFETY: every header points at `iov`, which describes `scratch`,
        // valid for writes during the call; no names or control buffers are
        // asked for.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                MMSG_BATCH_MAX as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if got >= 0 {
            return Ok(got as usize);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(0),
            _ => return Err(e),
        }
    }
}

/// CPUs online on the machine (not only those this thread may use).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf only reads a system value; _SC_NPROCESSORS_ONLN is a
    // valid name, and a failure returns -1, handled below.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).ok().filter(|n| *n > 0).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for a in ["127.0.0.1:1984", "[::1]:7", "[fd00::1%3]:9"] {
            let a: SocketAddr = a.parse().unwrap();
            let mut meta = SlotMeta::EMPTY;
            meta.addr_len = encode_sockaddr(&a, &mut meta.addr);
            assert_eq!(slot_addr(&meta), Some(a));
        }
    }
}
