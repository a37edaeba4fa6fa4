"""Songs made at test time: no audio file is committed."""

import io
import math
import struct
import wave


def sine_wav(seconds: float, rate: int = 44100, channels: int = 2, freq: float = 440.0) -> bytes:
    """A 16-bit PCM WAV of a sine (a different pitch on each channel)."""
    frames = int(seconds * rate)
    samples = bytearray()
    for i in range(frames):
        for channel in range(channels):
            value = 0.3 * math.sin(2 * math.pi * freq * (1 + channel / 2) * i / rate)
            samples += struct.pack("<h", int(value * 32767))
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(bytes(samples))
    return out.getvalue()
