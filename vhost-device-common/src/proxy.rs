// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The control-channel relay, and the config-change sender it makes possible.
//!
//! vhost-user-backend 0.24 hands a device the backend channel only as the
//! vhost crate's `Backend`, which can send shared-memory and shared-object
//! messages but not `VHOST_USER_BACKEND_CONFIG_CHANGE_MSG` (id 2), and never
//! shows its socket. So the runtime sits between the front end and the
//! library: [`Relay`] copies every vhost-user message, whole and with its
//! file descriptors, from the front end's connection to a private socket pair
//! served by vhost-user-backend, and the replies back. On the way it notes
//! `SET_PROTOCOL_FEATURES` (is `REPLY_ACK` on?) and keeps a duplicate of the
//! descriptor that `SET_BACKEND_REQ_FD` carries, from which it builds a
//! [`ConfigChangeSender`].
//!
//! It also signals each call descriptor once when the library has installed
//! it (`SET_VRING_CALL`), as QEMU's libvhost-user does: a ring that is still
//! enabled from before a device reset starts at `SET_VRING_KICK`, so a
//! worker may complete a request before the front end's `SET_VRING_CALL` is
//! processed, and vhost-user-backend 0.24 drops that notification (no call
//! descriptor yet) — the guest would wait forever. With `REPLY_ACK` the relay
//! asks the library to acknowledge the message, swallows that
//! acknowledgement (unless the front end asked for one) and then writes the
//! new call eventfd; a spurious notification is harmless to a driver.
//!
//! Message framing (QEMU `docs/interop/vhost-user.rst`, "Message
//! specification"): a 12-byte header `u32 request, u32 flags, u32 size`, then
//! `size` bytes of payload; descriptors travel as `SCM_RIGHTS` with the
//! message. The relay reads each message whole (descriptors arrive with its
//! first byte) and sends it with one `sendmsg`, so descriptors stay with
//! their message. The control path is not hot: a relay costs two threads per
//! connection and a copy of each small message.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};

/// `VHOST_USER_SET_PROTOCOL_FEATURES`.
const SET_PROTOCOL_FEATURES: u32 = 16;
/// `VHOST_USER_SET_BACKEND_REQ_FD`.
const SET_BACKEND_REQ_FD: u32 = 21;
/// `VHOST_USER_SET_VRING_CALL`.
const SET_VRING_CALL: u32 = 13;
/// `VHOST_USER_BACKEND_CONFIG_CHANGE_MSG`.
const CONFIG_CHANGE_MSG: u32 = 2;
/// `VHOST_USER_PROTOCOL_F_REPLY_ACK`.
const F_REPLY_ACK: u64 = 1 << 3;
const VERSION: u32 = 0x1;
const REPLY: u32 = 0x4;
const NEED_REPLY: u32 = 0x8;
const HEADER: usize = 12;
/// No vhost-user message comes near this; a larger size is a broken peer.
const MAX_PAYLOAD: usize = 1 << 20;
/// Descriptors one message may carry (`VHOST_MEMORY_BASELINE_NREGIONS` is 8).
const MAX_FDS: usize = 32;
/// How long a config-change message waits for the front end's reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `CONFIG_CHANGE_MSG` on a connection's backend channel.
#[derive(Debug)]
pub struct ConfigChangeSender {
    stream: Mutex<UnixStream>,
    reply_ack: bool,
}

impl ConfigChangeSender {
    /// Tell the front end the config space changed; with `REPLY_ACK`, wait
    /// (at most a few seconds) for it to confirm.
    pub fn send(&self) -> io::Result<()> {
        let stream = crate::lock(&self.stream);
        let flags = VERSION | if self.reply_ack { NEED_REPLY } else { 0 };
        let mut hdr = [0u8; HEADER];
        hdr[0..4].copy_from_slice(&CONFIG_CHANGE_MSG.to_le_bytes());
        hdr[4..8].copy_from_slice(&flags.to_le_bytes());
        (&*stream).write_all(&hdr)?;
        if !self.reply_ack {
            return Ok(());
        }
        let mut reply = [0u8; HEADER + 8];
        (&*stream).read_exact(&mut reply)?;
        let word = |at: usize| {
            u32::from_le_bytes([reply[at], reply[at + 1], reply[at + 2], reply[at + 3]])
        };
        if word(0) != CONFIG_CHANGE_MSG || word(4) & REPLY == 0 || word(8) != 8 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the front end answered the config change with another message",
            ));
        }
        let mut value = [0u8; 8];
        value.copy_from_slice(&reply[HEADER..]);
        match u64::from_le_bytes(value) {
            0 => Ok(()),
            v => Err(io::Error::other(format!(
                "the front end refused the config change (status {v})"
            ))),
        }
    }
}

/// One vhost-user message: header and payload bytes, and its descriptors.
struct Message {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Message {
    fn word(&self, at: usize) -> u32 {
        u32::from_le_bytes([
            self.bytes[at],
            self.bytes[at + 1],
            self.bytes[at + 2],
            self.bytes[at + 3],
        ])
    }
}

/// Read exactly `buf.len()` bytes, collecting any descriptors. `Ok(false)`
/// on a clean end of stream before the first byte.
fn recv_exact(fd: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut buf[got..])];
        let msg =
            match recvmsg::<UnixAddr>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
                Ok(m) => m,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
        let n = msg.bytes;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = c {
                for raw in received {
                    // SAFETY: the kernel just installed `raw` in this process
                    // for this message; nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
        }
        if n == 0 {
            if got == 0 {
                return Ok(false);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    Ok(true)
}

fn recv_message(fd: RawFd) -> io::Result<Option<Message>> {
    let mut fds = Vec::new();
    let mut bytes = vec![0u8; HEADER];
    if !recv_exact(fd, &mut bytes, &mut fds)? {
        return Ok(None);
    }
    let size = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    if size > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("vhost-user message with a {size}-byte payload"),
        ));
    }
    bytes.resize(HEADER + size, 0);
    if size > 0 && !recv_exact(fd, &mut bytes[HEADER..], &mut fds)? {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(Message { bytes, fds }))
}

fn send_message(fd: RawFd, msg: &Message) -> io::Result<()> {
    let raw: Vec<RawFd> = msg.fds.iter().map(AsRawFd::as_raw_fd).collect();
    let mut sent = 0;
    while sent < msg.bytes.len() {
        let iov = [IoSlice::new(&msg.bytes[sent..])];
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if sent == 0 && !raw.is_empty() {
            &rights
        } else {
            &[]
        };
        match sendmsg::<UnixAddr>(fd, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A call eventfd to signal once the library has acknowledged the
/// `SET_VRING_CALL` that carried it.
struct CallKick {
    fd: Option<OwnedFd>,
    /// The front end asked for the acknowledgement itself.
    forward_reply: bool,
}

type CallKicks = Arc<Mutex<VecDeque<CallKick>>>;

fn signal_call(fd: &OwnedFd) {
    if let Err(e) = nix::unistd::write(fd, &1u64.to_ne_bytes()) {
        log::warn!("cannot signal a new call descriptor: {e}");
    }
}

/// The two relay threads of one connection.
#[derive(Debug)]
pub struct Relay {
    threads: Vec<JoinHandle<()>>,
    frontend: UnixStream,
}

impl Relay {
    /// Relay between `frontend` (the front end's connection) and `library`
    /// (our end of the pair vhost-user-backend serves). `on_backend_channel`
    /// gets a config-change sender each time the front end sends
    /// `SET_BACKEND_REQ_FD`.
    pub fn start<F>(
        frontend: UnixStream,
        library: UnixStream,
        on_backend_channel: F,
    ) -> io::Result<Self>
    where
        F: Fn(ConfigChangeSender) + Send + 'static,
    {
        let reply_ack = Arc::new(AtomicBool::new(false));
        let (fe_in, lib_out) = (frontend.try_clone()?, library.try_clone()?);
        let (lib_in, fe_out) = (library, frontend.try_clone()?);
        let ack = reply_ack.clone();
        let kicks: CallKicks = Arc::default();
        let pending = kicks.clone();
        let requests = thread::Builder::new()
            .name("vhost-user-relay".into())
            .spawn(move || {
                let result = relay_requests(&fe_in, &lib_out, &ack, &pending, &on_backend_channel);
                if let Err(e) = result {
                    log::warn!("front-end connection: {e}");
                }
                // The library sees the disconnect as an end of stream.
                let _ = lib_out.shutdown(std::net::Shutdown::Both);
            })?;
        let replies = thread::Builder::new()
            .name("vhost-user-relay".into())
            .spawn(move || {
                while let Ok(Some(msg)) = recv_message(lib_in.as_raw_fd()) {
                    if msg.bytes.len() >= HEADER
                        && msg.word(0) == SET_VRING_CALL
                        && msg.word(4) & REPLY != 0
                    {
                        let kick = crate::lock(&kicks).pop_front();
                        if let Some(kick) = kick {
                            if let Some(fd) = &kick.fd {
                                signal_call(fd);
                            }
                            if !kick.forward_reply {
                                continue;
                            }
                        }
                    }
                    if send_message(fe_out.as_raw_fd(), &msg).is_err() {
                        break;
                    }
                }
                // The connection ended on our side: the front end sees it.
                let _ = fe_out.shutdown(std::net::Shutdown::Both);
            })?;
        Ok(Self {
            threads: vec![requests, replies],
            frontend,
        })
    }

    /// Close the front end's connection and wait for both threads.
    pub fn join(self) {
        let _ = self.frontend.shutdown(std::net::Shutdown::Both);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn relay_requests<F>(
    from: &UnixStream,
    to: &UnixStream,
    reply_ack: &AtomicBool,
    kicks: &CallKicks,
    on_backend_channel: &F,
) -> io::Result<()>
where
    F: Fn(ConfigChangeSender),
{
    while let Some(mut msg) = recv_message(from.as_raw_fd())? {
        let request = msg.word(0);
        if request == SET_VRING_CALL {
            let fd = msg.fds.first().and_then(|f| f.try_clone().ok());
            if reply_ack.load(Ordering::Acquire) {
                let flags = msg.word(4);
                crate::lock(kicks).push_back(CallKick {
                    fd,
                    forward_reply: flags & NEED_REPLY != 0,
                });
                msg.bytes[4..8].copy_from_slice(&(flags | NEED_REPLY).to_le_bytes());
                send_message(to.as_raw_fd(), &msg)?;
            } else {
                // No acknowledgement to wait for: signal right after.
                send_message(to.as_raw_fd(), &msg)?;
                if let Some(fd) = &fd {
                    signal_call(fd);
                }
            }
            continue;
        }
        if request == SET_PROTOCOL_FEATURES && msg.bytes.len() == HEADER + 8 {
            let mut v = [0u8; 8];
            v.copy_from_slice(&msg.bytes[HEADER..]);
            reply_ack.store(u64::from_le_bytes(v) & F_REPLY_ACK != 0, Ordering::Release);
        }
        if request == SET_BACKEND_REQ_FD {
            if let Some(fd) = msg.fds.first() {
                match fd.try_clone() {
                    Ok(dup) => {
                        let stream = UnixStream::from(dup);
                        // A front end that never answers must not hang a worker.
                        let _ = stream.set_read_timeout(Some(REPLY_TIMEOUT));
                        on_backend_channel(ConfigChangeSender {
                            stream: Mutex::new(stream),
                            reply_ack: reply_ack.load(Ordering::Acquire),
                        });
                    }
                    Err(e) => log::warn!("cannot keep the backend channel: {e}"),
                }
            }
        }
        send_message(to.as_raw_fd(), &msg)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::sync::mpsc;

    fn header(request: u32, flags: u32, size: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&request.to_le_bytes());
        h.extend_from_slice(&flags.to_le_bytes());
        h.extend_from_slice(&size.to_le_bytes());
        h
    }

    #[test]
    fn messages_and_their_descriptors_cross_the_relay_whole() {
        let (fe, fe_peer) = UnixStream::pair().unwrap();
        let (lib, lib_peer) = UnixStream::pair().unwrap();
        let relay = Relay::start(fe_peer, lib, |_| {}).unwrap();
        let (passed, _keep) = UnixStream::pair().unwrap();
        let mut bytes = header(5, VERSION, 4);
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        let msg = Message {
            bytes: bytes.clone(),
            fds: vec![OwnedFd::from(passed)],
        };

        send_message(fe.as_raw_fd(), &msg).unwrap();
        let got = recv_message(lib_peer.as_raw_fd()).unwrap().unwrap();

        assert_eq!(got.bytes, bytes);
        assert_eq!(got.fds.len(), 1);
        drop(fe);
        assert!(recv_message(lib_peer.as_raw_fd()).unwrap().is_none());
        relay.join();
    }

    fn send(fd: &UnixStream, bytes: Vec<u8>, fds: Vec<OwnedFd>) {
        send_message(fd.as_raw_fd(), &Message { bytes, fds }).unwrap();
    }

    #[test]
    fn new_call_descriptor_is_signalled_once_the_library_installed_it() {
        let (fe, fe_peer) = UnixStream::pair().unwrap();
        let (lib, lib_peer) = UnixStream::pair().unwrap();
        let relay = Relay::start(fe_peer, lib, |_| {}).unwrap();
        let mut features = header(SET_PROTOCOL_FEATURES, VERSION, 8);
        features.extend_from_slice(&F_REPLY_ACK.to_le_bytes());
        send(&fe, features, vec![]);
        let call =
            nix::sys::eventfd::EventFd::from_flags(nix::sys::eventfd::EfdFlags::EFD_NONBLOCK)
                .unwrap();
        let mut set_call = header(SET_VRING_CALL, VERSION, 8);
        set_call.extend_from_slice(&2u64.to_le_bytes());
        send(
            &fe,
            set_call,
            vec![call.as_fd().try_clone_to_owned().unwrap()],
        );
        let _features = recv_message(lib_peer.as_raw_fd()).unwrap().unwrap();
        let got = recv_message(lib_peer.as_raw_fd()).unwrap().unwrap();
        assert_ne!(
            got.word(4) & NEED_REPLY,
            0,
            "the library is not asked to ack"
        );
        assert!(
            call.read().is_err(),
            "signalled before the library installed it"
        );

        let mut ack = header(SET_VRING_CALL, VERSION | REPLY, 8);
        ack.extend_from_slice(&0u64.to_le_bytes());
        send(&lib_peer, ack, vec![]);
        let mut other = header(1, VERSION | REPLY, 8);
        other.extend_from_slice(&7u64.to_le_bytes());
        send(&lib_peer, other, vec![]);

        let next = recv_message(fe.as_raw_fd()).unwrap().unwrap();
        assert_eq!(
            next.word(0),
            1,
            "the front end got an ack it did not ask for"
        );
        assert_eq!(call.read().unwrap(), 1);
        drop(fe);
        relay.join();
    }

    #[test]
    fn backend_channel_gives_a_config_change_sender_that_waits_for_the_ack() {
        let (fe, fe_peer) = UnixStream::pair().unwrap();
        let (lib, lib_peer) = UnixStream::pair().unwrap();
        let (tx, rx) = mpsc::channel();
        let relay = Relay::start(fe_peer, lib, move |s| tx.send(s).unwrap()).unwrap();
        let mut features = header(SET_PROTOCOL_FEATURES, VERSION, 8);
        features.extend_from_slice(&F_REPLY_ACK.to_le_bytes());
        send_message(
            fe.as_raw_fd(),
            &Message {
                bytes: features,
                fds: vec![],
            },
        )
        .unwrap();
        let (channel_ours, channel_theirs) = UnixStream::pair().unwrap();
        send_message(
            fe.as_raw_fd(),
            &Message {
                bytes: header(SET_BACKEND_REQ_FD, VERSION, 0),
                fds: vec![OwnedFd::from(channel_theirs)],
            },
        )
        .unwrap();
        let sender = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        let front_end = thread::spawn(move || {
            let got = recv_message(channel_ours.as_raw_fd()).unwrap().unwrap();
            let mut reply = header(got.word(0), VERSION | REPLY, 8);
            reply.extend_from_slice(&0u64.to_le_bytes());
            (&channel_ours).write_all(&reply).unwrap();
            got
        });

        sender.send().unwrap();

        let got = front_end.join().unwrap();
        assert_eq!(got.word(0), CONFIG_CHANGE_MSG);
        assert_ne!(got.word(4) & NEED_REPLY, 0);
        // Both messages reached the library too.
        assert!(recv_message(lib_peer.as_raw_fd()).unwrap().is_some());
        assert!(recv_message(lib_peer.as_raw_fd()).unwrap().is_some());
        drop(fe);
        relay.join();
    }
}
