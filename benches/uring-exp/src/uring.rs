//! The io_uring driver of the same [`Pair`] loop, single-threaded:
//!
//! - one multishot accept on the listener (re-armed if the kernel ends it);
//! - per connection, one multishot recv on each socket, selecting buffers from one provided
//!   buffer ring (`IORING_REGISTER_PBUF_RING`); a buffer goes back to the ring as soon as the
//!   pair has taken the bytes (it parses them in place and copies only what it forwards or
//!   keeps), and the ring's tail is published once per loop turn;
//! - a send SQE for whatever the pair has to send (its buffer stays untouched until the
//!   completion: see the [`Pair`] invariants), re-submitted for the rest of a short send;
//! - every SQE of a loop turn goes to the kernel in the one `io_uring_enter` that also waits
//!   for the next completions (`submit_and_wait(1)`), with `SINGLE_ISSUER | DEFER_TASKRUN`
//!   (completion work runs in that call, not by interrupting the loop).
//!
//! With `--fixed-files`, both sockets of a pair are also registered in the ring's file table
//! (one `io_uring_register` per connection), and recvs and sends name them by index, which
//! spares the kernel a file lookup and reference per operation. The ring's own fd is always
//! registered (`IORING_REGISTER_RING_FDS`), so `io_uring_enter` does not look it up either.
//!
//! Per request that leaves no system call but `io_uring_enter` (shared by every connection
//! with work in the same turn). The upstream connection is made with a blocking `connect`
//! when the downstream one is accepted, and a pair is torn down with `shutdown` (which ends its
//! multishot recvs) then `close` once no operation of it is in flight: per connection, not per
//! request.
//!
//! States of a connection slot: *open* (both recvs armed, at most one send per direction in
//! flight) → *closing* (both sockets shut down, waiting for the in-flight operations'
//! completions) → *free* (fds closed; the slot's generation is bumped, so a completion can
//! never be taken for a later connection's).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{IntoRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::{BufRingEntry, Fd, Fixed};
use io_uring::{IoUring, cqueue, opcode, squeue};

use crate::Pair;

const RING_ENTRIES: u32 = 1024;
/// Provided buffers: a power of two, at most 32768.
const BUFS: u16 = 512;
const BUF_SIZE: usize = 4096;
const BGID: u16 = 0;
/// Connection slots when the sockets are registered (two table entries per slot; the table
/// may not exceed RLIMIT_NOFILE).
const FIXED_SLOTS: u32 = 4096;

const OP_ACCEPT: u64 = 1;
const OP_RECV_DOWN: u64 = 2;
const OP_RECV_UP: u64 = 3;
const OP_SEND_UP: u64 = 4;
const OP_SEND_DOWN: u64 = 5;

fn user_data(op: u64, slot: usize, generation: u32) -> u64 {
    op << 56 | (slot as u64) << 32 | u64::from(generation)
}

fn split_user_data(ud: u64) -> (u64, usize, u32) {
    (ud >> 56, ((ud >> 32) & 0xff_ffff) as usize, ud as u32)
}

/// The provided-buffer ring: `BUFS` entries in page-aligned memory shared with the kernel, and
/// the buffers they point to.
struct BufRing {
    entries: *mut BufRingEntry,
    bufs: Vec<u8>,
    /// Our copy of the tail (the kernel reads the published one).
    tail: u16,
}

impl BufRing {
    fn new(ring: &IoUring) -> io::Result<BufRing> {
        let bytes = usize::from(BUFS) * std::mem::size_of::<BufRingEntry>();
        // SAFETY: an anonymous private mapping, page-aligned as the kernel requires.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut br = BufRing {
            entries: ptr.cast(),
            bufs: vec![0u8; usize::from(BUFS) * BUF_SIZE],
            tail: 0,
        };
        // SAFETY: the mapping lives as long as the process (never unmapped), BUFS entries.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(ptr as u64, BUFS, BGID, 0)?;
        }
        for bid in 0..BUFS {
            br.give_back(bid);
        }
        br.publish();
        Ok(br)
    }

    fn buf(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * BUF_SIZE;
        &self.bufs[start..start + len]
    }

    /// Queues buffer `bid` for the kernel again (visible after [`BufRing::publish`]).
    fn give_back(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (BUFS - 1));
        let addr = self.bufs.as_ptr() as u64 + (usize::from(bid) * BUF_SIZE) as u64;
        // SAFETY: idx < BUFS entries of the mapping; the kernel only reads entries below the
        // published tail, and this one is past it.
        unsafe {
            let e = &mut *self.entries.add(idx);
            e.set_addr(addr);
            e.set_len(BUF_SIZE as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field overlays entry 0's `resv`, inside the mapping; u16-aligned.
        unsafe {
            let tail = BufRingEntry::tail(self.entries)
                .cast_mut()
                .cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

struct Conn {
    generation: u32,
    down: RawFd,
    up: RawFd,
    pair: Pair,
    /// Operations submitted and not completed for good (a multishot recv counts once, until
    /// its last completion).
    in_flight: u32,
    send_up: bool,
    send_down: bool,
    closing: bool,
}

struct Driver {
    conns: Vec<Option<Conn>>,
    generations: Vec<u32>,
    free: Vec<usize>,
    listener: RawFd,
    upstream: SocketAddr,
    /// SQEs of this loop turn, pushed to the submission queue before `submit_and_wait`.
    sqes: Vec<squeue::Entry>,
    bufs: BufRing,
    /// `--fixed-files`: slot `i`'s sockets are table entries `2i` (down) and `2i + 1` (up).
    fixed: bool,
    /// File table updates to make before this turn's SQEs are submitted.
    register: Vec<(u32, [RawFd; 2])>,
}

/// Serves until the process is killed.
pub fn run(listen: SocketAddr, upstream: SocketAddr, fixed_files: bool) -> io::Result<()> {
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(RING_ENTRIES * 4)
        .build(RING_ENTRIES)?;
    let listener = TcpListener::bind(listen)?;
    let bufs = BufRing::new(&ring)?;
    if fixed_files {
        ring.submitter().register_files_sparse(2 * FIXED_SLOTS)?;
    }
    let mut d = Driver {
        conns: Vec::new(),
        generations: Vec::new(),
        free: Vec::new(),
        listener: listener.into_raw_fd(),
        upstream,
        sqes: Vec::with_capacity(256),
        bufs,
        fixed: fixed_files,
        register: Vec::new(),
    };
    d.arm_accept();
    let (mut submitter, mut sq, mut cq) = ring.split();
    submitter.register_ring_fd()?;
    loop {
        for (offset, fds) in d.register.drain(..) {
            submitter.register_files_update(offset, &fds)?;
        }
        for e in d.sqes.drain(..) {
            // SAFETY: every SQE's buffer (a pair's output, or none) outlives its completion.
            while unsafe { sq.push(&e) }.is_err() {
                sq.sync();
                submitter.submit()?;
                sq.sync();
            }
        }
        sq.sync();
        match submitter.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {} // CQ full: drain it first
            Err(e) => return Err(e),
        }
        cq.sync();
        for cqe in &mut cq {
            d.complete(cqe.user_data(), cqe.result(), cqe.flags());
        }
        d.bufs.publish();
    }
}

impl Driver {
    fn arm_accept(&mut self) {
        self.sqes.push(
            opcode::AcceptMulti::new(Fd(self.listener))
                .build()
                .user_data(user_data(OP_ACCEPT, 0, 0)),
        );
    }

    fn arm_recv(&mut self, slot: usize, up: bool) {
        let c = self.conns[slot].as_mut().expect("open slot");
        let (fd, op) = if up {
            (c.up, OP_RECV_UP)
        } else {
            (c.down, OP_RECV_DOWN)
        };
        c.in_flight += 1;
        let sqe = if self.fixed {
            opcode::RecvMulti::new(Fixed(2 * slot as u32 + u32::from(up)), BGID).build()
        } else {
            opcode::RecvMulti::new(Fd(fd), BGID).build()
        };
        self.sqes
            .push(sqe.user_data(user_data(op, slot, c.generation)));
    }

    /// Submits a send for whatever the pair has pending, one per direction at a time.
    fn flush(&mut self, slot: usize) {
        let c = self.conns[slot].as_mut().expect("open slot");
        if c.closing {
            return;
        }
        if !c.send_up && !c.pair.pending_up().is_empty() {
            let p = c.pair.pending_up();
            c.send_up = true;
            c.in_flight += 1;
            let sqe = if self.fixed {
                opcode::Send::new(Fixed(2 * slot as u32 + 1), p.as_ptr(), p.len() as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            } else {
                opcode::Send::new(Fd(c.up), p.as_ptr(), p.len() as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            };
            self.sqes
                .push(sqe.user_data(user_data(OP_SEND_UP, slot, c.generation)));
        }
        if !c.send_down && !c.pair.pending_down().is_empty() {
            let p = c.pair.pending_down();
            c.send_down = true;
            c.in_flight += 1;
            let sqe = if self.fixed {
                opcode::Send::new(Fixed(2 * slot as u32), p.as_ptr(), p.len() as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            } else {
                opcode::Send::new(Fd(c.down), p.as_ptr(), p.len() as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            };
            self.sqes
                .push(sqe.user_data(user_data(OP_SEND_DOWN, slot, c.generation)));
        }
        if c.pair.finished() && !c.send_down {
            self.close(slot);
        }
    }

    fn open(&mut self, down: RawFd) {
        let up = match TcpStream::connect(self.upstream) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                s.into_raw_fd()
            }
            Err(e) => {
                eprintln!("connect {}: {e}", self.upstream);
                // SAFETY: the accepted fd is ours.
                unsafe { libc::close(down) };
                return;
            }
        };
        set_nodelay(down);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.generations.push(0);
            self.conns.len() - 1
        });
        if self.fixed {
            if slot as u32 >= FIXED_SLOTS {
                eprintln!("more than {FIXED_SLOTS} connections: refused");
                self.free.push(slot);
                // SAFETY: both fds are ours.
                unsafe {
                    libc::close(down);
                    libc::close(up);
                }
                return;
            }
            self.register.push((2 * slot as u32, [down, up]));
        }
        self.generations[slot] = self.generations[slot].wrapping_add(1);
        self.conns[slot] = Some(Conn {
            generation: self.generations[slot],
            down,
            up,
            pair: Pair::new(),
            in_flight: 0,
            send_up: false,
            send_down: false,
            closing: false,
        });
        self.arm_recv(slot, false);
        self.arm_recv(slot, true);
    }

    /// Shuts both sockets down (ending the multishot recvs); the slot is freed once no
    /// operation of it is in flight.
    fn close(&mut self, slot: usize) {
        let c = self.conns[slot].as_mut().expect("open slot");
        if !c.closing {
            c.closing = true;
            // SAFETY: both fds are this connection's, open until `release`.
            unsafe {
                libc::shutdown(c.down, libc::SHUT_RDWR);
                libc::shutdown(c.up, libc::SHUT_RDWR);
            }
        }
        self.release_if_idle(slot);
    }

    fn release_if_idle(&mut self, slot: usize) {
        let idle = self.conns[slot]
            .as_ref()
            .is_some_and(|c| c.closing && c.in_flight == 0);
        if idle {
            let c = self.conns[slot].take().expect("open slot");
            if self.fixed {
                // Drops the table's references (the slot's entries are re-set on reuse anyway).
                self.register.push((2 * slot as u32, [-1, -1]));
            }
            // SAFETY: no operation refers to these fds any more.
            unsafe {
                libc::close(c.down);
                libc::close(c.up);
            }
            self.free.push(slot);
        }
    }

    fn complete(&mut self, ud: u64, res: i32, flags: u32) {
        let (op, slot, generation) = split_user_data(ud);
        if op == OP_ACCEPT {
            if res >= 0 {
                self.open(res);
            } else {
                eprintln!("accept: {}", io::Error::from_raw_os_error(-res));
            }
            if !cqueue::more(flags) {
                self.arm_accept();
            }
            return;
        }
        let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if c.generation != generation {
            return;
        }
        match op {
            OP_RECV_DOWN | OP_RECV_UP => {
                let up = op == OP_RECV_UP;
                let more = cqueue::more(flags);
                if !more {
                    c.in_flight -= 1;
                }
                if let Some(bid) = cqueue::buffer_select(flags) {
                    if res > 0 && !c.closing {
                        let data = self.bufs.buf(bid, res as usize);
                        let _ = if up {
                            c.pair.on_up(data)
                        } else {
                            c.pair.on_down(data)
                        };
                    }
                    self.bufs.give_back(bid);
                }
                if c.closing {
                    self.release_if_idle(slot);
                } else if res == 0 || (res < 0 && res != -libc::ENOBUFS) {
                    self.close(slot); // EOF or error on either side ends the pair
                } else {
                    if !more {
                        self.arm_recv(slot, up);
                    }
                    self.flush(slot);
                }
            }
            OP_SEND_UP | OP_SEND_DOWN => {
                c.in_flight -= 1;
                let up = op == OP_SEND_UP;
                if up {
                    c.send_up = false;
                } else {
                    c.send_down = false;
                }
                if c.closing {
                    self.release_if_idle(slot);
                } else if res <= 0 {
                    self.close(slot);
                } else {
                    let _ = if up {
                        c.pair.sent_up(res as usize)
                    } else {
                        c.pair.sent_down(res as usize)
                    };
                    self.flush(slot);
                }
            }
            _ => {}
        }
    }
}

fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd and a c_int option value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
