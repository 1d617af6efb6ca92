# Stubs for the `qlaud._qlaud` extension module. The operations of `Client`
# and `AsyncClient` are put in where the markers are, from the spec.
from decimal import Decimal
from typing import Any, AsyncIterator, Iterator, Literal, overload

from typing_extensions import Self, final

# <imports: qlaud.types>

__all__ = [
    "AsyncClient",
    "AsyncPager",
    "AsyncStream",
    "Client",
    "DEFAULT_BASE_URL",
    "Pager",
    "Stream",
    "__version__",
]
DEFAULT_BASE_URL: str
__version__: str

@final
class Stream:
    """A model stream: each event's JSON, until the stream ends."""

    def __iter__(self) -> Self: ...
    def __next__(self) -> dict[str, Any]: ...
    def close(self) -> None:
        """Stops reading and closes the connection."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *_args: object) -> None: ...

@final
class AsyncStream:
    """A model stream for `async for`: each event's JSON."""

    def __aiter__(self) -> Self: ...
    async def __anext__(self) -> dict[str, Any]: ...
    async def aclose(self) -> None:
        """Stops reading and closes the connection."""
    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, *_args: object) -> None: ...

@final
class Pager:
    """Every item of a paginated listing, fetched a page at a time."""

    def __iter__(self) -> Self: ...
    def __next__(self) -> Key: ...

@final
class AsyncPager:
    """Every item of a paginated listing, for `async for`."""

    def __aiter__(self) -> Self: ...
    async def __anext__(self) -> Key: ...

@final
class Client:
    """The blocking client.

    Every method releases the GIL while it waits and can be interrupted with
    Ctrl-C. Safe to share between threads, and usable after `os.fork()` (the
    child opens its own connections).

    Args:
        api_key: a qlaud key (`qlk_live_…`); default `QLAUD_API_KEY`.
        base_url: where qlaud listens; default `QLAUD_BASE_URL`, else
            `http://127.0.0.1:8080`.
        max_retries: retries of idempotent calls (and of any call whose
            connection was refused) after transient failures, with backoff.
        timeout: seconds a call may take (for a stream: until it starts, and
            between events); `None` waits for ever.
    """

    def __new__(
        cls,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int = 2,
        timeout: float | None = 600.0,
    ) -> Self: ...
    @property
    def base_url(self) -> str:
        """The qlaud address requests go to."""
    def close(self) -> None:
        """Closes idle connections. The client stays usable (it reconnects)."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *_args: object) -> None: ...
    def __repr__(self) -> str: ...
    # Media (hand-written: multipart and binary bodies).
    def create_transcription(
        self, *, file: bytes, model: str, filename: str = "audio.wav", **fields: Any
    ) -> dict[str, Any] | str:
        """Transcribe audio (OpenAI Audio API): `file` (WAV, MP3, M4A, OGG, FLAC, WebM) and
        any other form field (`response_format`, `language`, `prompt`, …).

        `POST /v1/audio/transcriptions`
        """
    def create_translation(
        self, *, file: bytes, model: str, filename: str = "audio.wav", **fields: Any
    ) -> dict[str, Any] | str:
        """Translate audio into English (OpenAI Audio API).

        `POST /v1/audio/translations`
        """
    def create_speech(self, **body: Any) -> bytes:
        """Generate speech (OpenAI Audio API: `model`, `input`, `voice`, …): the audio.

        `POST /v1/audio/speech`
        """
    def transcribe_deepgram(
        self,
        *,
        audio: bytes | None = None,
        url: str | None = None,
        content_type: str = "application/octet-stream",
        **query: Any,
    ) -> dict[str, Any]:
        """Transcribe audio (Deepgram): raw `audio` or a `url`; `model` and options as keywords.

        `POST /v1/listen`
        """
    def create_elevenlabs_speech(
        self, voice_id: str, *, query: dict[str, Any] | None = None, **body: Any
    ) -> bytes:
        """Generate speech (ElevenLabs: `text`, `model_id`, …): the audio.

        `POST /v1/text-to-speech/{voice_id}`
        """
    def stream_elevenlabs_speech(
        self, voice_id: str, *, query: dict[str, Any] | None = None, **body: Any
    ) -> bytes:
        """Stream generated speech (ElevenLabs): the audio.

        `POST /v1/text-to-speech/{voice_id}/stream`
        """
    def create_video(
        self,
        *,
        prompt: str,
        model: str = "sora-2",
        input_reference: bytes | None = None,
        input_reference_name: str = "reference.png",
        **fields: Any,
    ) -> dict[str, Any]:
        """Create a video (OpenAI Videos API: `seconds`, `size`, … as keywords): the video
        object (`id`, `status`) to poll with `get_video`.

        `POST /v1/videos`
        """
    def get_video(self, video_id: str) -> dict[str, Any]:
        """Fetch a video (OpenAI Videos API): `status` (`queued`, `in_progress`, `completed`,
        `failed`) and `progress`.

        `GET /v1/videos/{video_id}`
        """
    def wait_job(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Wait for a job: polls `get_job` as often as `poll_after_ms` says until the job
        is final, or `timeout` seconds have passed (the job as last seen: check `status`).

        `GET /v1/jobs/{job_id}`, repeatedly
        """
    def get_video_content(self, video_id: str, *, variant: str | None = None) -> bytes:
        """Download a video (OpenAI Videos API): the MP4, or the `thumbnail` / `spritesheet`.

        `GET /v1/videos/{video_id}/content`
        """
    # <operations: Client>

@final
class AsyncClient:
    """The asyncio client: `Client`'s methods as coroutines.

    Takes the same arguments as `Client`.
    """

    def __new__(
        cls,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int = 2,
        timeout: float | None = 600.0,
    ) -> Self: ...
    @property
    def base_url(self) -> str:
        """The qlaud address requests go to."""
    async def close(self) -> None:
        """Closes idle connections. The client stays usable (it reconnects)."""
    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, *_args: object) -> None: ...
    def __repr__(self) -> str: ...
    # Media (hand-written: multipart and binary bodies).
    async def create_transcription(
        self, *, file: bytes, model: str, filename: str = "audio.wav", **fields: Any
    ) -> dict[str, Any] | str:
        """Transcribe audio (OpenAI Audio API): `file` (WAV, MP3, M4A, OGG, FLAC, WebM) and
        any other form field (`response_format`, `language`, `prompt`, …).

        `POST /v1/audio/transcriptions`
        """
    async def create_translation(
        self, *, file: bytes, model: str, filename: str = "audio.wav", **fields: Any
    ) -> dict[str, Any] | str:
        """Translate audio into English (OpenAI Audio API).

        `POST /v1/audio/translations`
        """
    async def create_speech(self, **body: Any) -> bytes:
        """Generate speech (OpenAI Audio API: `model`, `input`, `voice`, …): the audio.

        `POST /v1/audio/speech`
        """
    async def transcribe_deepgram(
        self,
        *,
        audio: bytes | None = None,
        url: str | None = None,
        content_type: str = "application/octet-stream",
        **query: Any,
    ) -> dict[str, Any]:
        """Transcribe audio (Deepgram): raw `audio` or a `url`; `model` and options as keywords.

        `POST /v1/listen`
        """
    async def create_elevenlabs_speech(
        self, voice_id: str, *, query: dict[str, Any] | None = None, **body: Any
    ) -> bytes:
        """Generate speech (ElevenLabs: `text`, `model_id`, …): the audio.

        `POST /v1/text-to-speech/{voice_id}`
        """
    async def stream_elevenlabs_speech(
        self, voice_id: str, *, query: dict[str, Any] | None = None, **body: Any
    ) -> bytes:
        """Stream generated speech (ElevenLabs): the audio.

        `POST /v1/text-to-speech/{voice_id}/stream`
        """
    async def create_video(
        self,
        *,
        prompt: str,
        model: str = "sora-2",
        input_reference: bytes | None = None,
        input_reference_name: str = "reference.png",
        **fields: Any,
    ) -> dict[str, Any]:
        """Create a video (OpenAI Videos API: `seconds`, `size`, … as keywords): the video
        object (`id`, `status`) to poll with `get_video`.

        `POST /v1/videos`
        """
    async def get_video(self, video_id: str) -> dict[str, Any]:
        """Fetch a video (OpenAI Videos API): `status` (`queued`, `in_progress`, `completed`,
        `failed`) and `progress`.

        `GET /v1/videos/{video_id}`
        """
    async def wait_job(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Wait for a job: polls `get_job` as often as `poll_after_ms` says until the job
        is final, or `timeout` seconds have passed (the job as last seen: check `status`).

        `GET /v1/jobs/{job_id}`, repeatedly
        """
    async def get_video_content(self, video_id: str, *, variant: str | None = None) -> bytes:
        """Download a video (OpenAI Videos API): the MP4, or the `thumbnail` / `spritesheet`.

        `GET /v1/videos/{video_id}/content`
        """
    # <operations: AsyncClient>
