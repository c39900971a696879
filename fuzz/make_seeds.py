#!/usr/bin/env python3
"""Writes the committed seed corpora in fuzz/seeds/<target>/ (small, hand-made valid and
near-valid inputs; libFuzzer grows its working corpus in fuzz/corpus/, which is not
committed). Record format of the `sip` and `rtp` targets: see src/fuzzing.rs `records`."""
import os, struct, wave, io

HERE = os.path.dirname(os.path.abspath(__file__))

def put(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

def rec(op, data):
    data = data if isinstance(data, bytes) else data.encode()
    return bytes([op]) + struct.pack("<H", len(data)) + data

UDP, TCP, RTP, CLOCK = 0, 1, 2, 3

SDP = ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
       "m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
       "a=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n")

def req(method, cid="f1", transport="UDP", extra="", body="", uri="sip:pin@192.0.2.10",
        to_tag="", cseq=1):
    return (f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} 192.0.2.1:5060;branch=z9hG4bK{method}{cseq};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:+15551234567@192.0.2.1>;tag=pbx\r\n"
            f"To: <sip:pin@192.0.2.10>{to_tag}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:pbx@192.0.2.1:5060>\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n{body}")

def invite(cid="f1", transport="UDP", sdp=SDP, extra=""):
    return req("INVITE", cid, transport, "Content-Type: application/sdp\r\n" + extra, sdp)

def te(digit, ts, dur, end=False, marker=False, seq=1):
    hdr = struct.pack(">BBHII", 0x80, (0x80 if marker else 0) | 101, seq, ts, 0xCAFE)
    return hdr + struct.pack(">BBH", digit, 0x80 if end else 0x0A, dur)

def audio(seq, ts, byte=0xFF, pt=0):
    return struct.pack(">BBHII", 0x80, pt, seq, ts, 0xCAFE) + bytes([byte]) * 160

def tick(ms):
    return rec(CLOCK, struct.pack("<H", ms // 10))

# --- sip: whole calls and stray traffic ---
pin_call = [rec(UDP, invite()), tick(100), rec(UDP, req("ACK", to_tag=";tag=x"))]
seq, ts = 1, 1000
for i, d in enumerate([1, 2, 3, 4, 11]):
    for k in range(3):
        pin_call.append(rec(RTP, te(d, ts, 160 * (k + 1), end=(k == 2), marker=(k == 0), seq=seq)))
        seq += 1
    pin_call.append(tick(300))
    ts += 2000
pin_call += [tick(2000), rec(UDP, req("BYE", to_tag=";tag=x", cseq=2)), tick(40000)]
put("sip", "pin_call_rfc4733", b"".join(pin_call))
put("sip", "pin_call_tcp", b"".join([rec(TCP, invite(transport="TCP")), tick(200),
    rec(TCP, req("ACK", transport="TCP", to_tag=";tag=x")),
    rec(TCP, req("INFO", transport="TCP", to_tag=";tag=x", cseq=2,
                 extra="Content-Type: application/dtmf-relay\r\n", body="Signal=1\r\nDuration=160\r\n")),
    tick(5000), rec(TCP, "\r\n\r\n"), rec(TCP, req("BYE", transport="TCP", to_tag=";tag=x", cseq=3))]))
put("sip", "options", rec(UDP, req("OPTIONS")))
put("sip", "cancel", b"".join([rec(UDP, invite(extra="Session-Expires: 1800;refresher=uac\r\n")),
                               rec(UDP, req("CANCEL")), tick(32000)]))
put("sip", "reinvite_hold", b"".join([rec(UDP, invite()), tick(50), rec(UDP, req("ACK", to_tag=";tag=x")),
    rec(UDP, req("INVITE", to_tag=";tag=x", cseq=2, extra="Content-Type: application/sdp\r\n",
                 body=SDP.replace("a=sendrecv", "a=sendonly"))),
    rec(UDP, req("UPDATE", to_tag=";tag=x", cseq=3)), tick(65000)]))
put("sip", "delayed_offer", b"".join([rec(UDP, req("INVITE")), tick(50),
    rec(UDP, req("ACK", to_tag=";tag=x", extra="Content-Type: application/sdp\r\n", body=SDP))]))
put("sip", "responses_and_notify", b"".join([rec(UDP, invite()), rec(UDP, req("ACK", to_tag=";tag=x")),
    rec(UDP, "SIP/2.0 202 Accepted\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKx\r\n"
             "From: <sip:pin@192.0.2.10>;tag=x\r\nTo: <sip:+15551234567@192.0.2.1>;tag=pbx\r\n"
             "Call-ID: f1\r\nCSeq: 1 REFER\r\nContent-Length: 0\r\n\r\n"),
    rec(UDP, req("NOTIFY", to_tag=";tag=x", cseq=5, extra="Event: refer\r\nSubscription-State: terminated\r\n"
                 "Content-Type: message/sipfrag\r\n", body="SIP/2.0 200 OK\r\n"))]))
torture = [
    req("OPTIONS", extra="l: 3\r\n"),
    req("OPTIONS").replace("Via: SIP/2.0/UDP", "v:  SIP  /   2.0\r\n  /UDP"),
    req("OPTIONS", uri="mailto:x@y"),
    req("OPTIONS", extra="Require: foo\r\n"),
    req("OPTIONS").replace(" SIP/2.0\r\n", " SIP/7.0\r\n", 1),
    req("NEWMETHOD"),
    req("OPTIONS").replace("CSeq: 1", "CSeq: 4294967296"),
    req("OPTIONS", extra="Call-ID: dup\r\n"),
    invite(sdp=SDP + "m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264\r\n"),
]
put("sip", "torture", b"".join(rec(UDP, t) for t in torture))

# --- sdp ---
put("sdp", "offer", SDP)
put("sdp", "video_and_audio", SDP.replace("m=audio", "m=video 5000 RTP/AVP 31\r\nm=audio"))
put("sdp", "ipv6_hold", "v=0\r\no=- 1 2 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=inactive\r\na=ptime:30\r\n")
put("sdp", "multicast", SDP.replace("192.0.2.1\r\nt=", "233.252.0.1/127\r\nt="))

# --- rtp: setup byte (PCMU, telephone-event 96+0, 20 ms) then records ---
r = [bytes([0b0110])]
for i in range(5):
    r.append(rec(0, audio(i + 1, 160 * i)))
for k in range(3):
    r.append(rec(0, struct.pack(">BBHII", 0x80, 96 | (0x80 if k == 0 else 0), 10 + k, 1600, 0xCAFE)
                 + struct.pack(">BBH", 5, 0x8A if k == 2 else 0x0A, 160 * (k + 1))))
r.append(rec(0x80 | 20, b""))
r.append(rec(1, audio(20, 3200)))  # another source: not latched
put("rtp", "audio_and_events", b"".join(r))
put("rtp", "pcma_cn", bytes([0b0101]) + rec(0, audio(1, 0, 0xD5, 8)) + rec(0, struct.pack(">BBHII", 0x80, 13, 2, 160, 1) + b"\x40"))

# RTCP: a receiver report (one block) + SDES CNAME, on its port and muxed (setup bit 6: mux).
rr = struct.pack(">BBHI", 0x81, 201, 7, 0xCAFE) + struct.pack(">IIIIII", 0x1234, 0, 5, 0, 0, 0)
cname = b"pbx@192.0.2.1"
chunk = struct.pack(">IBB", 0xCAFE, 1, len(cname)) + cname + b"\0"
chunk += b"\0" * (-len(chunk) % 4)
sdes = struct.pack(">BBH", 0x81, 202, len(chunk) // 4) + chunk
put("rtp", "rtcp_rr_sdes", bytes([0b01000110]) + rec(0, audio(1, 0)) + rec(0x40, rr + sdes)
    + rec(0x60, rr + sdes) + rec(0x80 | 100, b"") + rec(0x40, struct.pack(">BBHI", 0x81, 203, 1, 0xCAFE)))

# --- info ---
put("info", "relay", b"\x00Signal=5\r\nDuration=160\r\n")
put("info", "dtmf", b"\x01" + b"#")
put("info", "relay_star", b"\x02signal= *\nduration=100\n")

# --- wav ---
def wav_pcm(rate, n=800, ch=1):
    b = io.BytesIO()
    w = wave.open(b, "wb")
    w.setnchannels(ch); w.setsampwidth(2); w.setframerate(rate)
    w.writeframes(b"".join(struct.pack("<h", (i * 37) % 2000 - 1000) for i in range(n * ch)))
    w.close()
    return b.getvalue()
def wav_g711(fmt):  # 7 = mu-law, 6 = A-law
    data = bytes([0xFF if fmt == 7 else 0xD5]) * 800
    fmtck = struct.pack("<HHIIHH", fmt, 1, 8000, 8000, 1, 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmtck)) + fmtck + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body
put("wav", "pcm8k", wav_pcm(8000))
put("wav", "pcm16k", wav_pcm(16000))
put("wav", "pcm48k", wav_pcm(48000, 300))
put("wav", "ulaw", wav_g711(7))
put("wav", "alaw", wav_g711(6))
put("wav", "stereo_refused", wav_pcm(8000, 100, 2))

# --- config ---
with open(os.path.join(HERE, "..", "sip-config", "pincoderouting.toml"), "rb") as f:
    put("config", "shipped", f.read())
put("config", "minimal", "[[organization]]\nname = \"a\"\nenabled = true\nmatch_user = [\"pin\"]\n"
    "pbx_host = \"h\"\npin_success_ext = \"1\"\npin_failed_ext = \"2\"\nmatch_source = [\"10.0.0.0/8\"]\n"
    "[crm]\nkind = \"http_lookup\"\n[crm.http]\nurl = \"https://crm/x?p={phone}\"\n")
