//! Passing file descriptors over a Unix stream socket with SCM_RIGHTS, in batches, one
//! marker byte per batch (so a batch's fds always arrive with its byte).

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Most fds sent in one message (the kernel's SCM_MAX_FD is 253).
pub const BATCH: usize = 200;

/// Sends `fds` in batches of at most [`BATCH`], each with one marker byte.
pub fn send_fds(sock: &UnixStream, fds: &[RawFd]) -> io::Result<()> {
    for chunk in fds.chunks(BATCH) {
        send_with_fds(sock.as_raw_fd(), b"F", chunk)?;
    }
    Ok(())
}

/// Receives exactly `count` fds sent by [`send_fds`]; they are close-on-exec.
pub fn recv_fds(sock: &UnixStream, count: usize) -> io::Result<Vec<OwnedFd>> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let batch = recv_batch(sock)?;
        if batch.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "batch without fds",
            ));
        }
        out.extend(batch);
    }
    if out.len() != count {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "too many fds received",
        ));
    }
    Ok(out)
}

fn cmsg_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE((n * mem::size_of::<RawFd>()) as u32) as usize }
}

/// A control-message buffer for `sendmsg`/`recvmsg`, aligned for `cmsghdr` by its element
/// type (the kernel and the `CMSG_*` macros read it as `cmsghdr`; a `Vec<u8>` has no such
/// guarantee).
#[derive(Debug)]
pub struct ControlBuf {
    hdrs: Vec<libc::cmsghdr>,
    len: usize,
}

impl ControlBuf {
    /// A zeroed buffer of `len` bytes (rounded up to whole headers in storage).
    pub fn with_len(len: usize) -> ControlBuf {
        let count = len.div_ceil(mem::size_of::<libc::cmsghdr>());
        // SAFETY: cmsghdr is plain data, valid when zeroed.
        let hdrs = (0..count).map(|_| unsafe { mem::zeroed() }).collect();
        ControlBuf { hdrs, len }
    }

    /// A buffer with room for one SCM_RIGHTS message of `fds` fds.
    pub fn for_fds(fds: usize) -> ControlBuf {
        ControlBuf::with_len(cmsg_space(fds))
    }

    /// The usable length in bytes (`msg_controllen`).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no room at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start of the buffer (`msg_control`), aligned for `cmsghdr`.
    pub fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        self.hdrs.as_mut_ptr().cast()
    }
}

/// Checks, in debug builds, that a control-message header the `CMSG_*` macros returned is
/// aligned for `cmsghdr` before it is dereferenced.
fn debug_check_aligned(cmsg: *const libc::cmsghdr) {
    debug_assert_eq!(
        cmsg as usize % mem::align_of::<libc::cmsghdr>(),
        0,
        "misaligned cmsghdr"
    );
}

/// Sends `payload` with `fds` attached (SCM_RIGHTS) on the connected socket `sock`, in one
/// `sendmsg` (at most [`BATCH`] fds).
pub fn send_with_fds(sock: RawFd, payload: &[u8], fds: &[RawFd]) -> io::Result<()> {
    assert!(fds.len() <= BATCH && !payload.is_empty());
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    let mut control = ControlBuf::for_fds(fds.len());
    // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr();
    msg.msg_controllen = control.len() as _;
    // SAFETY: the control buffer is aligned for cmsghdr and has room for one header with
    // fds.len() fds.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        debug_check_aligned(cmsg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of_val(fds) as u32) as _;
        std::ptr::copy_nonoverlapping(
            fds.as_ptr().cast::<u8>(),
            libc::CMSG_DATA(cmsg),
            mem::size_of_val(fds),
        );
    }
    loop {
        // SAFETY: msg is fully initialised and points at live buffers.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 && n as usize == payload.len() {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if n < 0 && e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return Err(if n < 0 {
            e
        } else {
            io::ErrorKind::WriteZero.into()
        });
    }
}

fn recv_batch(sock: &UnixStream) -> io::Result<Vec<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = ControlBuf::for_fds(BATCH);
    // SAFETY: msghdr is plain data; every pointer set below outlives the recvmsg call.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr();
    msg.msg_controllen = control.len() as _;
    let n = loop {
        // SAFETY: msg points at live buffers of the sizes it declares.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel filled in, within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            debug_check_aligned(cmsg);
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "fds truncated"));
    }
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn fds_survive_the_trip_in_batches() {
        let (a, b) = UnixStream::pair().unwrap();
        let pipes: Vec<(UnixStream, UnixStream)> =
            (0..450).map(|_| UnixStream::pair().unwrap()).collect();
        let raw: Vec<RawFd> = pipes.iter().map(|(x, _)| x.as_raw_fd()).collect();
        send_fds(&a, &raw).unwrap();
        let got = recv_fds(&b, raw.len()).unwrap();
        assert_eq!(got.len(), 450);
        // The received fd 17 is the same socket as pipes[17].0.
        let mut received = UnixStream::from(got.into_iter().nth(17).unwrap());
        received.write_all(b"x").unwrap();
        let mut buf = [0u8; 1];
        (&pipes[17].1).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"x");
    }

    #[test]
    fn control_buffers_are_aligned_for_cmsghdr_at_every_size() {
        for n in 0..=BATCH {
            let mut buf = ControlBuf::for_fds(n);
            assert!(buf.len() >= cmsg_space(n));
            assert_eq!(
                buf.as_mut_ptr() as usize % mem::align_of::<libc::cmsghdr>(),
                0,
                "{n} fds"
            );
        }
    }

    /// The check on every header the `CMSG_*` macros return fires on a misaligned one
    /// (what a `Vec<u8>` control buffer could give).
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "misaligned cmsghdr")]
    fn a_misaligned_header_trips_the_alignment_check() {
        let words = [0u64; 4];
        let odd = words
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(1)
            .cast::<libc::cmsghdr>();
        debug_check_aligned(odd);
    }

    /// Full batches, one fd short of one and one over: every fd arrives, in order (each
    /// received fd is the same socket as the one sent at its index).
    #[test]
    fn many_fds_arrive_in_order_across_batch_boundaries() {
        for count in [1, BATCH - 1, BATCH, BATCH + 1, 3 * BATCH] {
            let (a, b) = UnixStream::pair().unwrap();
            let pipes: Vec<(UnixStream, UnixStream)> =
                (0..count).map(|_| UnixStream::pair().unwrap()).collect();
            let raw: Vec<RawFd> = pipes.iter().map(|(x, _)| x.as_raw_fd()).collect();
            send_fds(&a, &raw).unwrap();
            let got = recv_fds(&b, count).unwrap();
            assert_eq!(got.len(), count);
            for (i, fd) in got.into_iter().enumerate() {
                let mut s = UnixStream::from(fd);
                s.write_all(&[i as u8]).unwrap();
                let mut byte = [0u8; 1];
                (&pipes[i].1).read_exact(&mut byte).unwrap();
                assert_eq!(byte[0], i as u8, "fd {i} of {count}");
            }
        }
    }
}
