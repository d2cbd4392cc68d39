//! `Message::parse` and the typed accessors the analyser uses must not
//! allocate for ordinary messages (≤ `INLINE_HEADERS` fields, no multipart
//! body). Checked with a counting global allocator, per thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use wire::sip::{INLINE_HEADERS, Message, Method};

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every method forwards to `System` unchanged; the only addition is a
// const-initialised thread-local counter, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` via `alloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCS.with(Cell::get);
    let out = f();
    (ALLOCS.with(Cell::get) - before, out)
}

const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK74bf9;rport\r\n\
Via: SIP/2.0/TCP 192.0.2.7:5060;branch=z9hG4bK77ef4c2312983.1;received=192.0.2.8\r\n\
Max-Forwards: 70\r\n\
From: \"Alice \\\"A\\\"\" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
Call-ID: 3848276298220188511@atlanta.example.com\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@client.atlanta.example.com;transport=tcp>\r\n\
Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n\
Subject: folded\r\n  subject line\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 10\r\n\
\r\n\
v=0\r\no=- \r\n";

#[test]
fn parse_and_hot_accessors_do_not_allocate() {
    let (n, m) = allocations(|| Message::parse(INVITE));
    let m = m.unwrap();
    assert_eq!(n, 0, "parse allocated");
    let (n, ok) = allocations(|| {
        m.method() == Some(Method::Invite)
            && m.call_id().is_some()
            && m.from().and_then(|f| f.tag()).is_some()
            && m.to().is_some_and(|t| t.tag().is_none())
            && m.cseq().is_some_and(|c| c.seq == 1)
            && m.via().count() == 2
            && m.via().nth(1).and_then(|v| v.received()).is_some()
            && m.record_route().count() == 2
            && m.sdp_body() == Some(&b"v=0\r\no=- \r"[..])
            && m.header_values("record-route").count() == 2
    });
    assert!(ok);
    assert_eq!(n, 0, "accessors allocated");
}

#[test]
fn many_headers_spill_to_the_heap() {
    let mut msg = b"OPTIONS sip:a@example.com SIP/2.0\r\n".to_vec();
    for i in 0..=INLINE_HEADERS {
        msg.extend_from_slice(format!("X-H{i}: {i}\r\n").as_bytes());
    }
    msg.extend_from_slice(b"\r\n");
    let (n, m) = allocations(|| Message::parse(&msg));
    assert!(n > 0);
    assert_eq!(
        m.unwrap().header(&format!("x-h{INLINE_HEADERS}")),
        Some("32")
    );
}
