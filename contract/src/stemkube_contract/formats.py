"""The audio formats the service reads, by file extension: the names its stored inputs take (the
API names an input by the format it detects in its bytes, never by the user's file name), and
the files a client picks from a folder."""

from typing import Final

AUDIO_EXTENSIONS: Final = frozenset(
    {
        "mp3",
        "mp2",
        "aac",
        "wav",
        "flac",
        "ogg",
        "opus",
        "oga",
        "m4a",
        "mp4",
        "mov",
        "3gp",
        "aif",
        "aiff",
        "webm",
        "mka",
        "mkv",
        "caf",
        "wma",
        "amr",
        "ape",
        "wv",
        "au",
    }
)
