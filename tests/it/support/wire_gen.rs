//! The seeded generator of wire scenarios (see [`super::wire_scenario`]): several
//! connections at once, each carrying one request (ALIVE2 v5/v6 with names from a grammar,
//! PORT_PLEASE2 hits and misses, NAMES, DUMP, KILL, STOP, framing errors), written in
//! pieces split at random offsets, sometimes closed early, and after a registration
//! sometimes followed by more data, a close or a half-close; the stories of the
//! connections are interleaved at random.

use std::collections::VecDeque;

use super::rng::Rng;
use super::wire_scenario::{Scenario, Step};

/// The largest payload the C epmd accepts (`INBUF_SIZE - 3`).
const MAX_PAYLOAD: usize = 3057;

/// Sizes of the data sent on a registration connection after its reply: around 64 (the
/// old read size of epmd-rs) and around 3060 (the C epmd's one read).
const AFTER_SIZES: &[usize] = &[1, 2, 63, 64, 65, 100, 1000, 3059, 3060, 3061, 4000];

/// Generates scenarios from a seed; names carry the scenario number so that they are
/// unique, except those of the grammar that cannot be (empty, maximal lengths).
#[derive(Debug)]
pub(crate) struct Generator {
    rng: Rng,
    /// The number of the next scenario.
    next_id: u64,
    /// A tag mixed into names, so that two generators (two test runs on a pair of
    /// daemons) do not share unique names.
    tag: u64,
}

/// What the stories of one scenario have used, for lookups that hit.
#[derive(Debug, Default)]
struct Context {
    names: Vec<Vec<u8>>,
    requests: u64,
}

impl Generator {
    /// A generator for `seed`.
    pub(crate) fn new(seed: u64) -> Generator {
        Generator {
            rng: Rng::new(seed),
            next_id: 0,
            tag: seed % 1000,
        }
    }

    /// The next scenario.
    pub(crate) fn scenario(&mut self) -> Scenario {
        let id = self.next_id;
        self.next_id += 1;
        let relaxed = self.rng.chance(40);
        let conns = self.rng.range(1, 4) as u8;
        let mut ctx = Context::default();
        let mut stories: Vec<VecDeque<Step>> = (0..conns)
            .map(|c| self.story(id, c, &mut ctx).into())
            .collect();
        let mut steps = Vec::new();
        while stories.iter().any(|s| !s.is_empty()) {
            let live: Vec<usize> = (0..stories.len())
                .filter(|&i| !stories[i].is_empty())
                .collect();
            let i = *self.rng.pick(&live);
            steps.extend(stories[i].pop_front());
        }
        // Leave nothing open: the daemons are back to their state before the scenario.
        steps.extend((0..conns).map(Step::Close));
        Scenario {
            relaxed,
            steps,
            requests: ctx.requests,
        }
    }

    /// The steps of connection `conn`: one request in pieces, maybe more afterwards.
    fn story(&mut self, id: u64, conn: u8, ctx: &mut Context) -> Vec<Step> {
        let r = &mut self.rng;
        let roll = r.range(0, 99);
        let (request, registers) = match roll {
            0..=34 => (self.alive2(id, conn, ctx), true),
            35..=49 => (self.port_please(ctx), false),
            50..=57 => (frame(&names_payload(&mut self.rng)), false),
            58..=64 => (frame(&dump_payload(&mut self.rng)), false),
            65..=66 => (frame(b"k"), false),
            67..=76 => (self.stop(ctx), false),
            _ => (self.malformed(ctx), false),
        };
        ctx.requests += 1;
        let mut steps = Vec::new();
        let r = &mut self.rng;
        let pieces = if request.len() < 2 || r.chance(50) {
            1
        } else {
            r.range(2, 4)
        };
        let mut cuts: Vec<usize> = (1..pieces).map(|_| r.range(1, request.len() - 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut start = 0;
        for cut in cuts.into_iter().chain([request.len()]) {
            steps.push(Step::Send(conn, request[start..cut].to_vec()));
            start = cut;
        }
        // An early close: drop the pieces after a random one.
        if steps.len() > 1 && r.chance(15) {
            let keep = r.range(1, steps.len() - 1);
            steps.truncate(keep);
            steps.push(Step::Close(conn));
            return steps;
        }
        // Glue another request to the last piece (pipelining, or data right behind an
        // ALIVE2 in the same write).
        if r.chance(8) {
            if let Some(Step::Send(_, last)) = steps.last_mut() {
                last.extend_from_slice(&frame(b"n"));
            }
        }
        if registers {
            match r.range(0, 9) {
                0..=3 => {
                    let n = if r.chance(70) {
                        *r.pick(AFTER_SIZES)
                    } else {
                        r.range(1, 5000)
                    };
                    let data = if r.chance(50) { vec![0; n] } else { r.bytes(n) };
                    steps.push(Step::Send(conn, data));
                }
                4 => steps.push(Step::HalfClose(conn)),
                5 => steps.push(Step::Close(conn)),
                _ => {}
            }
        }
        steps
    }

    /// A framed ALIVE2_REQ with a name from the grammar; wrong lengths now and then.
    fn alive2(&mut self, id: u64, conn: u8, ctx: &mut Context) -> Vec<u8> {
        let name = self.name(id, conn);
        ctx.names.push(name.clone());
        let r = &mut self.rng;
        let highest: u16 = *r.pick(&[5, 6, 5, 6, 5, 6, 0, 7, 65535]);
        let lowest: u16 = *r.pick(&[5, 5, 5, 0, 6, highest]);
        let node_port = r.next_u64() as u16;
        let node_type = *r.pick(&[77, 77, 72, 0]);
        let protocol = *r.pick(&[0, 0, 1]);
        let extra_len = *r.pick(&[0, 0, 0, 1, 2, 100, 1019, 1020, 1021, 2000]);
        let extra = r.bytes(extra_len);
        let mut p = vec![b'x'];
        p.extend_from_slice(&node_port.to_be_bytes());
        p.extend_from_slice(&[node_type, protocol]);
        p.extend_from_slice(&highest.to_be_bytes());
        p.extend_from_slice(&lowest.to_be_bytes());
        let mut nlen = name.len() as u16;
        let mut elen = extra.len() as u16;
        match r.range(0, 19) {
            0 => nlen = nlen.wrapping_add(1),
            1 => nlen = nlen.wrapping_sub(1),
            2 => elen = elen.wrapping_add(r.range(1, 3) as u16),
            3 => elen = elen.wrapping_sub(1),
            4 => nlen = 65535,
            _ => {}
        }
        p.extend_from_slice(&nlen.to_be_bytes());
        p.extend_from_slice(&name);
        p.extend_from_slice(&elen.to_be_bytes());
        p.extend_from_slice(&extra);
        match r.range(0, 19) {
            // Junk after the extra field, inside the declared length.
            0 => {
                let n = r.range(1, 8);
                p.extend_from_slice(&r.bytes(n));
            }
            // Truncated payloads (13 bytes is the C epmd's odd case).
            1 => p.truncate(r.range(1, p.len())),
            2 => p.truncate(13.min(p.len())),
            _ => {}
        }
        frame(&p)
    }

    /// A node name from the grammar.
    fn name(&mut self, id: u64, conn: u8) -> Vec<u8> {
        let unique = format!("n{}x{id}c{conn}", self.tag).into_bytes();
        let r = &mut self.rng;
        match r.range(0, 19) {
            0..=7 => unique,
            8 => Vec::new(),
            9 => {
                let mut n = unique;
                n.insert(1, 0);
                n
            }
            10..=12 => {
                // Code points around the 255 limit, 2, 3 or 4 bytes each (up to 1,020+).
                let ch = *r.pick(&["é", "€", "𝄞"]);
                let count = *r.pick(&[1, 100, 254, 255, 256, 300]);
                let mut n = unique;
                n.truncate(0);
                n.extend(ch.repeat(count).bytes());
                n
            }
            13 => {
                let len = *r.pick(&[255, 256, 1019, 1020, 1021, 1030]);
                let mut n = unique;
                n.resize(len, b'L');
                n
            }
            14 => {
                // Not UTF-8: a stray byte, an overlong form, a surrogate, a truncation.
                const BAD: [&[u8]; 4] = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82"];
                let bad = *r.pick(&BAD);
                let mut n = unique;
                n.extend_from_slice(bad);
                n
            }
            15 => {
                let mut n = unique;
                n.extend_from_slice(b" @\t");
                n
            }
            _ => {
                let mut n = unique;
                n.extend("é".bytes());
                n
            }
        }
    }

    /// A framed PORT_PLEASE2_REQ: a name of this scenario (a hit if it registered) or a
    /// miss; a trailing NUL now and then.
    fn port_please(&mut self, ctx: &Context) -> Vec<u8> {
        let r = &mut self.rng;
        const MISSES: [&[u8]; 3] = [b"nosuchnode", b"", b"\xff"];
        let mut name = if !ctx.names.is_empty() && r.chance(70) {
            r.pick(&ctx.names).clone()
        } else {
            r.pick(&MISSES).to_vec()
        };
        if r.chance(15) {
            name.push(0);
        }
        let mut p = vec![b'z'];
        p.extend_from_slice(&name);
        frame(&p)
    }

    /// A framed STOP_REQ: a name of this scenario or a miss, or the bare tag.
    fn stop(&mut self, ctx: &Context) -> Vec<u8> {
        let r = &mut self.rng;
        let mut p = vec![b's'];
        match r.range(0, 9) {
            0 => {}
            1..=6 if !ctx.names.is_empty() => {
                let name = r.pick(&ctx.names).clone();
                p.extend_from_slice(&name);
            }
            _ => p.extend_from_slice(b"nosuchnode"),
        }
        frame(&p)
    }

    /// Framing errors and odd requests.
    fn malformed(&mut self, _ctx: &Context) -> Vec<u8> {
        let r = &mut self.rng;
        match r.range(0, 9) {
            0 => vec![0, 0],
            1 => {
                let mut p = vec![b'n'];
                p.extend(r.bytes(MAX_PAYLOAD - 1));
                frame(&p)
            }
            2 => {
                let mut p = vec![b'n'];
                p.extend(r.bytes(MAX_PAYLOAD));
                frame(&p)
            }
            // A length larger than what follows: the request never completes.
            3 => {
                let mut f = frame(b"n");
                f[1] = 5;
                f
            }
            4 => frame(&[*r.pick(&[0u8, 1, 99, 108, 255, b'y', b'w'])]),
            5 => {
                let n = r.range(1, 40);
                r.bytes(n)
            }
            6 => {
                let mut f = frame(b"n");
                f.extend(frame(b"d"));
                f
            }
            7 => vec![0],
            8 => {
                // The old PORT_PLEASE (tag 112) and ALIVE (tag 97): unknown now.
                const OLD: [&[u8]; 2] = [b"pfoo", b"a\x00\x10foo"];
                let old = *r.pick(&OLD);
                frame(old)
            }
            _ => frame(&[0xff; 3]),
        }
    }
}

/// A NAMES payload, sometimes with junk inside its length (`00 02 6E 58` is valid).
fn names_payload(r: &mut Rng) -> Vec<u8> {
    let mut p = vec![b'n'];
    if r.chance(20) {
        let n = r.range(1, 10);
        p.extend(r.bytes(n));
    }
    p
}

/// A DUMP payload, sometimes with junk inside its length.
fn dump_payload(r: &mut Rng) -> Vec<u8> {
    let mut p = vec![b'd'];
    if r.chance(20) {
        let n = r.range(1, 10);
        p.extend(r.bytes(n));
    }
    p
}

/// `payload` with its big-endian `u16` length in front.
pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}
