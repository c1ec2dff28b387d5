// One WebRTC call between this device and another device of a room, with
// chatd as the signalling channel: the offer, the answer and the ICE
// candidates travel as OP_RTMSG addressed to one device (receiver user +
// client id), which is what the seed design made OP_RTMSG for.
//
// This module knows nothing of the DOM: the page gives it a `signal(kind,
// body)` function that sends one signalling message to the peer, and an
// `onChange(call)` callback; it holds the RTCPeerConnection, the data
// channel and the call's state:
//
//   idle -> calling (we sent an offer) -> connected -> ended
//   idle -> ringing (an offer came)    -> connecting (we answered) -> connected -> ended
//
// No STUN or TURN server is configured (iceServers: []): devices on one
// network (or one machine) connect with host candidates, which is what
// the tests use; a deployment adds its own servers through `rtcConfig`.

/** Message types of the demo (OP_RTMSG msgtype; chatd never reads them). */
export const MSG = Object.freeze({
  /** Chat text, UTF-8, to the whole room. */
  TEXT: 0x01,
  /** "This device is here": JSON {device, name}, to the whole room, on every join. */
  DEVICE_HELLO: 0x10,
  /** Answer to DEVICE_HELLO: JSON {device, name}, to the device that said hello. */
  DEVICE_HERE: 0x11,
  /** "This device left the room": JSON {device}, to the whole room. */
  DEVICE_BYE: 0x12,
  /** WebRTC offer: JSON {call, sdp}, to one device. */
  CALL_OFFER: 0x20,
  /** WebRTC answer: JSON {call, sdp}, to the caller's device. */
  CALL_ANSWER: 0x21,
  /** One ICE candidate: JSON {call, candidate}, to the peer device. */
  CALL_ICE: 0x22,
  /** Hang-up or decline: JSON {call, reason}, to the peer device. */
  CALL_HANGUP: 0x23,
});

export class Call {
  /**
   * @param {object} o
   * @param {'caller'|'callee'} o.role
   * @param {string} o.id  call id (the caller picks it)
   * @param {string} o.chatid  the room whose call this is
   * @param {{userid: string, clientid: number}} o.peer  the other device
   * @param {(type: number, body: object) => void} o.signal  sends to the peer device
   * @param {(call: Call) => void} o.onChange
   * @param {RTCConfiguration} [o.rtcConfig]
   * @param {() => Promise<MediaStream|null>} [o.getMedia] local audio, or null for data only
   */
  constructor({ role, id, chatid, peer, signal, onChange, rtcConfig = { iceServers: [] }, getMedia = async () => null }) {
    this.role = role;
    this.id = id;
    this.chatid = chatid;
    this.peer = peer;
    this.state = role === 'caller' ? 'calling' : 'ringing';
    this.channelState = 'closed';
    this.media = 'none';
    this.received = [];
    this.remoteStream = null;
    this.endReason = null;
    this._signal = signal;
    this._onChange = onChange;
    this._getMedia = getMedia;
    this._pendingIce = [];
    this._offer = null;
    this.pc = new RTCPeerConnection(rtcConfig);
    this.pc.onicecandidate = (ev) => {
      if (ev.candidate) this._signal(MSG.CALL_ICE, { call: this.id, candidate: ev.candidate.toJSON() });
    };
    this.pc.onconnectionstatechange = () => {
      const s = this.pc.connectionState;
      if (s === 'connected' && this.state !== 'ended') this._set('connected');
      else if (s === 'failed') this.end('failed', true);
    };
    this.pc.ontrack = (ev) => {
      this.remoteStream = ev.streams[0] ?? new MediaStream([ev.track]);
      this._changed();
    };
    this.pc.ondatachannel = (ev) => this._useChannel(ev.channel);
  }

  /** Caller: makes the data channel and the offer, and sends it. */
  async start() {
    this._useChannel(this.pc.createDataChannel('chat'));
    await this._addMedia();
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    this._signal(MSG.CALL_OFFER, { call: this.id, sdp: this.pc.localDescription.sdp });
  }

  /** Callee: keeps the offer until the user answers. */
  offered(sdp) {
    this._offer = sdp;
  }

  /** Callee: answers the offer. */
  async answer() {
    if (this.state !== 'ringing') return;
    this._set('connecting');
    await this.pc.setRemoteDescription({ type: 'offer', sdp: this._offer });
    await this._flushIce();
    await this._addMedia();
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    this._signal(MSG.CALL_ANSWER, { call: this.id, sdp: this.pc.localDescription.sdp });
  }

  /** Caller: the peer answered. */
  async answered(sdp) {
    if (this.role !== 'caller' || this.pc.remoteDescription) return;
    await this.pc.setRemoteDescription({ type: 'answer', sdp });
    await this._flushIce();
  }

  /** A candidate from the peer (kept until the remote description is set). */
  async candidate(c) {
    if (this.pc.remoteDescription) await this.pc.addIceCandidate(c);
    else this._pendingIce.push(c);
  }

  /** Sends text over the data channel. */
  sendText(text) {
    if (this.channelState !== 'open') throw new Error('data channel not open');
    this._channel.send(text);
  }

  /** Ends the call; `tellPeer` sends CALL_HANGUP first. */
  end(reason, tellPeer) {
    if (this.state === 'ended') return;
    if (tellPeer) this._signal(MSG.CALL_HANGUP, { call: this.id, reason });
    this.endReason = reason;
    for (const s of this.pc.getSenders()) s.track?.stop();
    this.pc.close();
    this.channelState = 'closed';
    this._set('ended');
  }

  // ---- internals ----

  async _addMedia() {
    let stream = null;
    try {
      stream = await this._getMedia();
    } catch {
      stream = null; // no microphone, or refused: a data-only call
    }
    if (!stream || this.state === 'ended') return;
    for (const track of stream.getTracks()) this.pc.addTrack(track, stream);
    this.media = 'audio';
    this._changed();
  }

  async _flushIce() {
    const list = this._pendingIce.splice(0);
    for (const c of list) await this.pc.addIceCandidate(c);
  }

  _useChannel(ch) {
    this._channel = ch;
    this.channelState = ch.readyState === 'open' ? 'open' : 'connecting';
    ch.onopen = () => {
      this.channelState = 'open';
      this._changed();
    };
    ch.onclose = () => {
      this.channelState = 'closed';
      this._changed();
    };
    ch.onmessage = (ev) => {
      this.received.push(String(ev.data));
      this._changed();
    };
    this._changed();
  }

  _set(state) {
    this.state = state;
    this._changed();
  }

  _changed() {
    this._onChange(this);
  }
}
