// An AudioBuffer as a 16-bit PCM WAV file (RIFF, little-endian, channels interleaved).

export function encodeWav(buffer) {
  const channels = buffer.numberOfChannels;
  const frames = buffer.length;
  const rate = buffer.sampleRate;
  const bytesPerSample = 2;
  const dataSize = frames * channels * bytesPerSample;
  const out = new DataView(new ArrayBuffer(44 + dataSize));
  const ascii = (offset, text) => {
    for (let i = 0; i < text.length; i += 1) out.setUint8(offset + i, text.charCodeAt(i));
  };
  ascii(0, "RIFF");
  out.setUint32(4, 36 + dataSize, true);
  ascii(8, "WAVE");
  ascii(12, "fmt ");
  out.setUint32(16, 16, true); // the fmt chunk's size
  out.setUint16(20, 1, true); // PCM
  out.setUint16(22, channels, true);
  out.setUint32(24, rate, true);
  out.setUint32(28, rate * channels * bytesPerSample, true);
  out.setUint16(32, channels * bytesPerSample, true);
  out.setUint16(34, 16, true);
  ascii(36, "data");
  out.setUint32(40, dataSize, true);
  const data = [];
  for (let c = 0; c < channels; c += 1) data.push(buffer.getChannelData(c));
  let offset = 44;
  for (let i = 0; i < frames; i += 1) {
    for (let c = 0; c < channels; c += 1) {
      const sample = Math.max(-1, Math.min(1, data[c][i]));
      out.setInt16(offset, sample < 0 ? sample * 0x8000 : sample * 0x7fff, true);
      offset += 2;
    }
  }
  return new Blob([out.buffer], { type: "audio/wav" });
}
