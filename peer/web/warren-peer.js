// Warren's JavaScript peer: WebRTC data channels between browsers and native Warren peers,
// signalled (and, when the direct path cannot be had, relayed) through the broker over the
// WebSocket at /peer/ws. Served by Warren at /peer/warren-peer.js; no build step.
//
//   const peer = new WarrenPeer({ url: "ws://127.0.0.1:15672/peer/ws", name: "alice.tab",
//                                 user: "alice", password: "..." });
//   await peer.start();
//   peer.onmessage = (m) => console.log(m.from, m.path, m.text());
//   const link = await peer.connect("B");             // direct if the data channel opens
//   await link.send("hello", { routingKey: "chat", headers: { lang: "en" } });
//
// The data-channel format is the native peer's (peer/src/frame.rs), so a browser and
// `warren peer listen` talk directly:
//   Chunk 0x01 seq:u64 index:u32 count:u32 len:u32 payload   Ack 0x02 next:u64   Bye 0x03 last:u64
//   envelope = rk_len:u8 rk header_count:u16 (name_len:u8 name value_len:u32 value)* body
// Every message has a sequence number; the receiver delivers in order (reliable links) and
// acknowledges on the data channel; when the direct path goes, every message it did not
// acknowledge is sent again through the broker, in order, so nothing is lost or duplicated.
(function (global) {
  "use strict";

  const KIND_CHUNK = 0x01;
  const KIND_ACK = 0x02;
  const KIND_BYE = 0x03;
  const CHUNK_HEADER = 21;
  const MIN_FRAME = CHUNK_HEADER + 16;
  const enc = new TextEncoder();
  const dec = new TextDecoder();

  function toBytes(body) {
    if (body instanceof Uint8Array) return body;
    if (body instanceof ArrayBuffer) return new Uint8Array(body);
    if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
    return enc.encode(String(body));
  }

  function b64encode(bytes) {
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }

  function b64decode(s) {
    const raw = atob(s);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }

  // ---- the data-channel codec (peer/src/frame.rs)

  function envelopeHead(msg) {
    const rk = enc.encode(msg.routingKey || "");
    const headers = Object.entries(msg.headers || {}).map(([k, v]) => [enc.encode(k), enc.encode(String(v))]);
    let len = 1 + rk.length + 2;
    for (const [k, v] of headers) len += 1 + k.length + 4 + v.length;
    const head = new Uint8Array(len);
    const dv = new DataView(head.buffer);
    let o = 0;
    head[o++] = rk.length;
    head.set(rk, o); o += rk.length;
    dv.setUint16(o, headers.length); o += 2;
    for (const [k, v] of headers) {
      head[o++] = k.length;
      head.set(k, o); o += k.length;
      dv.setUint32(o, v.length); o += 4;
      head.set(v, o); o += v.length;
    }
    return head;
  }

  // Cuts message `seq` into chunk frames of at most maxFrame bytes.
  function encodeMessage(seq, msg, maxFrame) {
    const head = envelopeHead(msg);
    const body = msg.body;
    const total = head.length + body.length;
    const per = maxFrame - CHUNK_HEADER;
    const count = Math.max(1, Math.ceil(total / per));
    const frames = [];
    let offset = 0;
    for (let index = 0; index < count; index++) {
      const take = Math.min(per, total - offset);
      const f = new Uint8Array(CHUNK_HEADER + take);
      const dv = new DataView(f.buffer);
      f[0] = KIND_CHUNK;
      dv.setBigUint64(1, BigInt(seq));
      dv.setUint32(9, index);
      dv.setUint32(13, count);
      dv.setUint32(17, take);
      const end = offset + take;
      let at = CHUNK_HEADER;
      if (offset < head.length) {
        const part = head.subarray(offset, Math.min(end, head.length));
        f.set(part, at); at += part.length;
      }
      if (end > head.length) {
        const start = Math.max(offset, head.length) - head.length;
        f.set(body.subarray(start, end - head.length), at);
      }
      frames.push(f);
      offset = end;
    }
    return frames;
  }

  function control(kind, n) {
    const f = new Uint8Array(9);
    f[0] = kind;
    new DataView(f.buffer).setBigUint64(1, BigInt(n));
    return f;
  }

  function decodeFrames(buf) {
    const data = new Uint8Array(buf);
    const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const out = [];
    let o = 0;
    while (o < data.length) {
      const kind = data[o];
      if (kind === KIND_CHUNK) {
        if (data.length - o < CHUNK_HEADER) throw new Error("truncated chunk header");
        const seq = Number(dv.getBigUint64(o + 1));
        const index = dv.getUint32(o + 9);
        const count = dv.getUint32(o + 13);
        const len = dv.getUint32(o + 17);
        if (count === 0 || index >= count) throw new Error(`bad chunk ${index}/${count}`);
        if (data.length - o - CHUNK_HEADER < len) throw new Error("truncated chunk");
        out.push({ kind, seq, index, count, payload: data.slice(o + CHUNK_HEADER, o + CHUNK_HEADER + len) });
        o += CHUNK_HEADER + len;
      } else if (kind === KIND_ACK || kind === KIND_BYE) {
        if (data.length - o < 9) throw new Error("truncated control frame");
        out.push({ kind, n: Number(dv.getBigUint64(o + 1)) });
        o += 9;
      } else {
        throw new Error(`unknown frame kind ${kind}`);
      }
    }
    return out;
  }

  function decodeEnvelope(bytes) {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let o = 0;
    const need = (n) => { if (bytes.length - o < n) throw new Error("truncated envelope"); };
    need(1);
    const rkLen = bytes[o++];
    need(rkLen);
    const routingKey = dec.decode(bytes.subarray(o, o + rkLen)); o += rkLen;
    need(2);
    const n = dv.getUint16(o); o += 2;
    const headers = {};
    for (let i = 0; i < n; i++) {
      need(1);
      const kl = bytes[o++];
      need(kl);
      const k = dec.decode(bytes.subarray(o, o + kl)); o += kl;
      need(4);
      const vl = dv.getUint32(o); o += 4;
      need(vl);
      headers[k] = dec.decode(bytes.subarray(o, o + vl)); o += vl;
    }
    return { routingKey, headers, body: bytes.slice(o) };
  }

  function maxMessageSize(sdp) {
    const m = /a=max-message-size:(\d+)/.exec(sdp || "");
    const v = m ? Number(m[1]) : 65536;
    return Math.max(MIN_FRAME, Math.min(v === 0 ? 262144 : v, 262144));
  }

  // A received message: from, routingKey, headers, body (Uint8Array), path, and text().
  class Incoming {
    constructor(from, msg, path) {
      this.from = from;
      this.routingKey = msg.routingKey;
      this.headers = msg.headers;
      this.body = msg.body;
      this.path = path;
    }
    text() { return dec.decode(this.body); }
  }

  // ---- one link

  class Link {
    constructor(peer, remote, id, live) {
      this.peer = peer;
      this.remote = remote;
      this.id = id;
      this.live = live;
      this.key = live ? `${remote}#live` : remote;
      this.path = "connecting"; // connecting, direct, relay, closed
      this.pc = null;
      this.dc = null;
      this.maxFrame = 65536;
      this.remoteDescriptionSet = false;
      this.heldCandidates = [];
      this.nextSeq = 0;
      this.unacked = []; // [seq, msg, bytes] sent directly, not yet acknowledged (reliable)
      this.unackedBytes = 0;
      this.queue = []; // messages waiting for a path: [msg, resolve, reject]
      this.relayInFlight = 0;
      this.partials = new Map(); // seq -> {pieces, missing}
      this.nextExpected = 0; // reliable: next seq to deliver
      this.held = new Map(); // reliable: seq -> [msg, path] that came early
      this.seenLive = new Set();
      this.ackScheduled = false;
      this.lastAckSent = 0;
      this.waiters = []; // resolved when the window or buffer has room
      this.pathWaiters = [];
      this.stats = { direct: 0, relayed: 0, received: 0, returnsToDirect: 0 };
      this.connectTimer = null;
      this.offerer = false; // this side connected: it retries the direct path after a fallback
      this.noDirect = false; // the remote refused direct connections
      this.backoff = peer.retryMin;
      this.retryTimer = null;
    }

    setPath(p) {
      const order = { connecting: 0, direct: 1, relay: 2, closed: 3 };
      if (order[p] <= order[this.path]) return false;
      const from = this.path;
      this.path = p;
      if (p === "relay" || p === "closed") this.dropDirect();
      if (p === "relay" && from !== "connecting") this.republish();
      if (p === "closed") clearTimeout(this.retryTimer);
      this.peer.emit("path", { remote: this.remote, path: p });
      this.wake();
      this.pump();
      if (p === "relay") this.scheduleRetry();
      return true;
    }

    // A new attempt's data channel opened while relaying: back to the direct path. Nothing
    // sent through the broker is lost (it was confirmed there) or reordered (the receiver
    // orders by sequence number).
    backToDirect() {
      if (this.path !== "relay") return;
      this.path = "direct";
      this.backoff = this.peer.retryMin;
      this.stats.returnsToDirect++;
      this.peer.log(`link to ${this.remote}: direct path back`);
      this.peer.emit("path", { remote: this.remote, path: "direct" });
      this.wake();
      this.pump();
    }

    // The side that connected tries the direct path again, with backoff, while relaying.
    scheduleRetry() {
      if (!this.offerer || this.noDirect || this.path !== "relay" || this.retryTimer || this.peer.retryMin == null) return;
      this.retryTimer = setTimeout(async () => {
        this.retryTimer = null;
        if (this.path !== "relay") return;
        try {
          await this.offer();
        } catch (e) {
          this.backoff = Math.min(2 * this.backoff, this.peer.retryMax);
          this.scheduleRetry();
        }
      }, this.backoff);
    }

    dropDirect() {
      clearTimeout(this.connectTimer);
      const pc = this.pc;
      this.pc = null;
      this.dc = null;
      this.remoteDescriptionSet = false;
      this.heldCandidates = [];
      if (pc) try { pc.close(); } catch (_) { /* gone */ }
    }

    // Everything sent directly and not acknowledged goes again through the broker, in order,
    // before anything new (the receiver drops what it already had).
    republish() {
      const again = this.unacked;
      this.unacked = [];
      this.unackedBytes = 0;
      for (const [seq, msg] of again) this.sendRelay(seq, msg);
    }

    wake() {
      const w = this.waiters;
      this.waiters = [];
      w.forEach((f) => f());
    }

    newPc() {
      if (this.pc) this.dropDirect(); // a newer attempt replaces an unfinished one
      const pc = new RTCPeerConnection({ iceServers: this.peer.iceServers });
      pc.onicecandidate = (e) => {
        if (e.candidate && e.candidate.candidate) {
          this.peer.signal(this.remote, this.id, {
            type: "candidate",
            candidate: e.candidate.candidate,
            sdpMid: e.candidate.sdpMid,
            sdpMLineIndex: e.candidate.sdpMLineIndex,
            usernameFragment: e.candidate.usernameFragment,
          });
        }
      };
      pc.onconnectionstatechange = () => {
        if (pc === this.pc && (pc.connectionState === "failed" || pc.connectionState === "closed")) this.directLost(`connection ${pc.connectionState}`);
      };
      this.pc = pc;
      return pc;
    }

    attach(dc) {
      dc.binaryType = "arraybuffer";
      dc.bufferedAmountLowThreshold = this.peer.bufferLow;
      dc.onbufferedamountlow = () => { this.wake(); this.pump(); };
      const opened = () => {
        if (dc !== this.dc) return;
        if (this.pc && this.pc.sctp && this.pc.sctp.maxMessageSize) this.maxFrame = Math.max(MIN_FRAME, Math.min(this.maxFrame, this.pc.sctp.maxMessageSize));
        clearTimeout(this.connectTimer);
        if (this.path === "connecting") this.setPath("direct");
        else if (this.path === "relay") this.backToDirect();
      };
      dc.onopen = opened;
      dc.onclose = () => { if (dc === this.dc) this.directLost("data channel closed"); };
      dc.onmessage = (e) => { if (dc === this.dc) this.onData(e.data); };
      this.dc = dc;
      // The answerer's channel may be open by the time it is announced.
      if (dc.readyState === "open") opened();
    }

    directLost(why) {
      if (this.path === "connecting" || this.path === "direct") {
        this.peer.log(`link to ${this.remote}: direct path lost (${why}); relaying through the broker`);
        this.setPath("relay");
      }
    }

    // Offers a direct path: the link's first attempt, or a new one while relaying.
    async offer() {
      this.offerer = true;
      const pc = this.newPc();
      const init = this.live ? { ordered: false, maxRetransmits: 0 } : {};
      this.attach(pc.createDataChannel("warren", init));
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      this.connectTimer = setTimeout(() => {
        if (pc !== this.pc) return;
        if (this.path === "connecting") {
          this.peer.signal(this.remote, this.id, { type: "abandon" });
          this.directLost("timed out");
        } else if (this.path === "relay") {
          // This try failed: close it, wait longer before the next.
          this.peer.signal(this.remote, this.id, { type: "abandon" });
          this.dropDirect();
          this.backoff = Math.min(2 * this.backoff, this.peer.retryMax);
          this.scheduleRetry();
        }
      }, this.peer.connectTimeout);
      await this.peer.signal(this.remote, this.id, { type: "offer", sdp: offer.sdp, live: this.live }, true);
    }

    async answer(sdp) {
      const pc = this.newPc();
      pc.ondatachannel = (e) => this.attach(e.channel);
      this.maxFrame = maxMessageSize(sdp);
      await pc.setRemoteDescription({ type: "offer", sdp });
      this.remoteDescriptionSet = true;
      for (const c of this.heldCandidates.splice(0)) await pc.addIceCandidate(c).catch(() => {});
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      this.peer.signal(this.remote, this.id, { type: "answer", sdp: answer.sdp });
      this.connectTimer = setTimeout(() => {
        if (pc !== this.pc) return;
        if (this.path === "connecting") this.directLost("timed out");
        else if (this.path === "relay") this.dropDirect();
      }, 2 * this.peer.connectTimeout);
    }

    async onSignal(s) {
      switch (s.type) {
        case "answer":
          if (!this.pc) return;
          this.maxFrame = maxMessageSize(s.sdp);
          await this.pc.setRemoteDescription({ type: "answer", sdp: s.sdp });
          this.remoteDescriptionSet = true;
          for (const c of this.heldCandidates.splice(0)) await this.pc.addIceCandidate(c).catch(() => {});
          break;
        case "candidate": {
          const c = { candidate: s.candidate, sdpMid: s.sdpMid, sdpMLineIndex: s.sdpMLineIndex, usernameFragment: s.usernameFragment };
          if (!this.pc) return;
          if (this.remoteDescriptionSet) await this.pc.addIceCandidate(c).catch(() => {});
          else this.heldCandidates.push(c);
          break;
        }
        case "reject":
          this.noDirect = true;
          this.directLost(`rejected: ${s.reason}`);
          break;
        case "abandon":
          if (this.path === "relay") this.dropDirect(); // a new try that did not open
          else this.directLost("abandoned by the remote");
          break;
        case "data":
          this.deliver(s.seq, { routingKey: s.routingKey || "", headers: s.headers || {}, body: b64decode(s.body) }, "relayed");
          break;
        case "bye":
          this.setPath("closed");
          this.peer.links.delete(this.key);
          this.peer.sessions.delete(this.id);
          break;
      }
    }

    // ---- sending

    send(body, opts = {}) {
      const msg = { routingKey: opts.routingKey || "", headers: opts.headers || {}, body: toBytes(body) };
      // The limits of both paths (the native peer's Message::validate), checked up front.
      if (enc.encode(msg.routingKey).length > 255) return Promise.reject(new Error("routing key longer than 255 bytes"));
      const names = Object.keys(msg.headers);
      if (names.length > 65535) return Promise.reject(new Error(`${names.length} headers; the limit is 65535`));
      for (const k of names) {
        const n = enc.encode(k).length;
        if (n === 0 || n > 255) return Promise.reject(new Error(`header name ${JSON.stringify(k)} must be 1 to 255 bytes`));
        if (k.startsWith("x-warren-")) return Promise.reject(new Error(`header ${k} uses the reserved prefix x-warren-`));
      }
      if (this.path === "closed") return Promise.reject(new Error("link closed"));
      return new Promise((resolve, reject) => {
        this.queue.push([msg, resolve, reject]);
        this.pump();
      });
    }

    hasRoom() {
      if (this.path === "direct") {
        if (!this.dc || this.dc.readyState !== "open") return false;
        if (this.dc.bufferedAmount > this.peer.bufferHigh) return false;
        return this.live || this.unackedBytes < this.peer.window;
      }
      if (this.path === "relay") return this.relayInFlight < this.peer.relayInFlight;
      return false;
    }

    pump() {
      if (this.pumping) return;
      this.pumping = true;
      try {
        while (this.queue.length && this.hasRoom()) {
          if (this.path === "direct") {
            // Small messages share one data-channel message.
            let batch = [];
            let size = 0;
            while (this.queue.length && size < this.maxFrame && (this.live || this.unackedBytes < this.peer.window)) {
              const [msg, resolve] = this.queue.shift();
              const seq = this.nextSeq++;
              for (const f of encodeMessage(seq, msg, this.maxFrame)) {
                if (size + f.length > this.maxFrame && batch.length) { this.dcSend(batch, size); batch = []; size = 0; }
                batch.push(f); size += f.length;
              }
              if (!this.live) {
                const bytes = 64 + msg.body.length;
                this.unacked.push([seq, msg, bytes]);
                this.unackedBytes += bytes;
              }
              this.stats.direct++;
              resolve("direct");
            }
            if (batch.length) this.dcSend(batch, size);
          } else {
            const [msg, resolve, reject] = this.queue.shift();
            const seq = this.nextSeq++;
            this.sendRelay(seq, msg).then(() => resolve("relayed"), reject);
          }
        }
      } finally {
        this.pumping = false;
      }
    }

    dcSend(frames, size) {
      const out = new Uint8Array(size);
      let o = 0;
      for (const f of frames) { out.set(f, o); o += f.length; }
      try {
        this.dc.send(out);
      } catch (e) {
        this.directLost(`send failed: ${e.message}`);
      }
    }

    sendRelay(seq, msg) {
      this.relayInFlight++;
      this.stats.relayed++;
      const signal = { type: "data", seq, live: this.live, routingKey: msg.routingKey, headers: msg.headers, body: b64encode(msg.body) };
      return this.peer.signal(this.remote, this.id, signal, true).finally(() => {
        this.relayInFlight--;
        this.pump();
      });
    }

    // Resolves once everything sent is acknowledged (direct) or taken by the broker (relay).
    async flush() {
      while (this.queue.length || this.unacked.length || this.relayInFlight) {
        if (this.path === "closed") throw new Error("link closed");
        await new Promise((r) => { this.waiters.push(r); setTimeout(r, 50); });
        this.pump();
      }
    }

    async close() {
      await this.flush();
      const last = this.nextSeq;
      if (this.path === "direct" && this.dc) this.dc.send(control(KIND_BYE, last));
      else await this.peer.signal(this.remote, this.id, { type: "bye", last }, true).catch(() => {});
      this.setPath("closed");
      this.peer.links.delete(this.key);
      this.peer.sessions.delete(this.id);
    }

    // Cuts the direct path (as a network failure would): what follows goes through the broker.
    severDirect() {
      this.directLost("severed");
    }

    // ---- receiving

    onData(buf) {
      let frames;
      try {
        frames = decodeFrames(buf);
      } catch (e) {
        this.directLost(`bad frame: ${e.message}`);
        return;
      }
      for (const f of frames) {
        if (f.kind === KIND_ACK) {
          while (this.unacked.length && this.unacked[0][0] < f.n) {
            this.unackedBytes -= this.unacked.shift()[2];
          }
          this.wake();
          this.pump();
        } else if (f.kind === KIND_BYE) {
          this.setPath("closed");
          this.peer.links.delete(this.key);
          this.peer.sessions.delete(this.id);
        } else {
          let p = this.partials.get(f.seq);
          if (!p) {
            if (f.count === 1) { this.deliverBytes(f.seq, f.payload); continue; }
            p = { pieces: new Array(f.count), missing: f.count };
            this.partials.set(f.seq, p);
            if (this.partials.size > 64) this.partials.delete(this.partials.keys().next().value);
          }
          if (!p.pieces[f.index]) { p.pieces[f.index] = f.payload; p.missing--; }
          if (p.missing === 0) {
            this.partials.delete(f.seq);
            const len = p.pieces.reduce((n, x) => n + x.length, 0);
            const all = new Uint8Array(len);
            let o = 0;
            for (const x of p.pieces) { all.set(x, o); o += x.length; }
            this.deliverBytes(f.seq, all);
          }
        }
      }
    }

    deliverBytes(seq, bytes) {
      let msg;
      try { msg = decodeEnvelope(bytes); } catch (e) { this.directLost(`bad envelope: ${e.message}`); return; }
      this.deliver(seq, msg, "direct");
    }

    deliver(seq, msg, path) {
      if (this.live) {
        if (this.seenLive.has(seq)) return;
        this.seenLive.add(seq);
        if (this.seenLive.size > 4096) this.seenLive.delete(this.seenLive.values().next().value);
        this.hand(msg, path);
        return;
      }
      if (seq < this.nextExpected || this.held.has(seq)) return; // a duplicate
      this.held.set(seq, [msg, path]);
      while (this.held.has(this.nextExpected)) {
        const [m, p] = this.held.get(this.nextExpected);
        this.held.delete(this.nextExpected);
        this.nextExpected++;
        this.hand(m, p);
      }
      this.scheduleAck();
    }

    hand(msg, path) {
      this.stats.received++;
      this.peer.emit("message", new Incoming(this.remote, msg, path));
    }

    // Cumulative acks on the data channel, a few per round trip rather than one per message.
    scheduleAck() {
      if (this.ackScheduled) return;
      this.ackScheduled = true;
      setTimeout(() => {
        this.ackScheduled = false;
        if (this.nextExpected > this.lastAckSent && this.dc && this.dc.readyState === "open") {
          this.lastAckSent = this.nextExpected;
          try { this.dc.send(control(KIND_ACK, this.nextExpected)); } catch (_) { /* the path is going */ }
        }
      }, 5);
    }
  }

  // ---- the peer

  class WarrenPeer {
    constructor(opts) {
      this.url = opts.url || `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/peer/ws`;
      this.name = opts.name;
      this.user = opts.user;
      this.password = opts.password;
      this.vhost = opts.vhost || "/";
      this.iceServers = opts.iceServers || [];
      this.connectTimeout = opts.connectTimeout || 5000;
      this.window = opts.window || 4 << 20;
      this.bufferHigh = opts.bufferHigh || 1 << 20;
      this.bufferLow = opts.bufferLow || 256 << 10;
      this.relayInFlight = opts.relayInFlight || 256;
      // After a fallback, the side that connected tries the direct path again after
      // retryMin ms, doubling up to retryMax after each failed try (null: stay relayed).
      this.retryMin = opts.retryMin === undefined ? 1000 : opts.retryMin;
      this.retryMax = opts.retryMax || 30000;
      this.acceptDirect = opts.acceptDirect !== false;
      this.links = new Map(); // remote (+ "#live" for a live link) -> Link
      this.sessions = new Map(); // session id -> Link
      this.handlers = { message: [], path: [], log: [] };
      this.onmessage = null;
      this.nextId = 1;
      this.confirms = new Map();
      this.ws = null;
    }

    on(event, f) { this.handlers[event].push(f); }

    emit(event, v) {
      if (event === "message" && this.onmessage) this.onmessage(v);
      for (const f of this.handlers[event] || []) f(v);
    }

    log(s) { this.emit("log", s); }

    start() {
      return new Promise((resolve, reject) => {
        const ws = new WebSocket(this.url);
        this.ws = ws;
        let welcomed = false;
        ws.onopen = () => ws.send(JSON.stringify({ op: "hello", name: this.name, vhost: this.vhost, user: this.user, password: this.password }));
        ws.onerror = () => { if (!welcomed) reject(new Error(`cannot reach ${this.url}`)); };
        ws.onclose = () => {
          for (const link of this.links.values()) link.setPath("closed");
          for (const [, c] of this.confirms) c.reject(new Error("signalling connection closed"));
          this.confirms.clear();
          if (!welcomed) reject(new Error("the broker closed the signalling connection"));
        };
        ws.onmessage = (e) => {
          const m = JSON.parse(e.data);
          if (m.op === "welcome") { welcomed = true; this.userName = m.user; resolve(this); }
          else if (m.op === "error") { const err = new Error(`${m.code}: ${m.reason}`); err.code = m.code; if (!welcomed) reject(err); else this.log(err.message); }
          else if (m.op === "confirm") {
            const c = this.confirms.get(m.id);
            if (c) { this.confirms.delete(m.id); m.ok ? c.resolve() : c.reject(new Error(m.reason || "refused")); }
          } else if (m.op === "signal") this.onSignal(m);
        };
      });
    }

    // Sends a signal; with `confirmed`, resolves once the broker took it.
    signal(to, session, signal, confirmed = false) {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error("not connected"));
      const msg = { op: "signal", to, session, signal };
      if (!confirmed) { this.ws.send(JSON.stringify(msg)); return Promise.resolve(); }
      msg.id = this.nextId++;
      return new Promise((resolve, reject) => {
        this.confirms.set(msg.id, { resolve, reject });
        this.ws.send(JSON.stringify(msg));
      });
    }

    async onSignal(m) {
      let link = this.sessions.get(m.session);
      const s = m.signal;
      if (!link) {
        if (s.type !== "offer" && s.type !== "data") return; // for a link that is gone
        link = new Link(this, m.from, m.session, !!s.live);
        const old = this.links.get(link.key);
        if (old) old.setPath("closed");
        this.links.set(link.key, link);
        this.sessions.set(m.session, link);
        if (s.type === "data") link.setPath("relay");
      }
      if (s.type === "offer") {
        if (link.path === "direct" || link.path === "closed") return; // stale
        if (s.sdp && this.acceptDirect) {
          try { await link.answer(s.sdp); } catch (e) { this.signal(m.from, m.session, { type: "reject", reason: e.message }); link.directLost(e.message); }
        } else {
          if (s.sdp) this.signal(m.from, m.session, { type: "reject", reason: "direct connections refused" });
          link.setPath("relay");
        }
        return;
      }
      await link.onSignal(s);
    }

    // A link to `remote` (the existing one, or a new one): direct if the data channel opens
    // within connectTimeout, else through the broker.
    async connect(remote, opts = {}) {
      const key = opts.live ? `${remote}#live` : remote;
      const existing = this.links.get(key);
      if (existing && existing.path !== "closed") return existing;
      const id = `${this.name}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
      const link = new Link(this, remote, id, !!opts.live);
      this.links.set(key, link);
      this.sessions.set(id, link);
      if (opts.relayOnly) {
        await this.signal(remote, id, { type: "offer", sdp: null, live: link.live }, true);
        link.setPath("relay");
      } else {
        await link.offer();
      }
      return link;
    }

    async send(remote, body, opts = {}) {
      const link = await this.connect(remote, opts);
      return link.send(body, opts);
    }

    link(remote, opts = {}) { return this.links.get(opts.live ? `${remote}#live` : remote); }

    close() {
      for (const link of this.links.values()) link.setPath("closed");
      if (this.ws) this.ws.close();
    }
  }

  WarrenPeer.encodeMessage = encodeMessage;
  WarrenPeer.decodeFrames = decodeFrames;
  WarrenPeer.decodeEnvelope = decodeEnvelope;
  global.WarrenPeer = WarrenPeer;
})(typeof globalThis !== "undefined" ? globalThis : window);
