"""qlaud: the billing gateway for AI apps.

    import qlaud
    client = qlaud.Client()  # QLAUD_API_KEY, QLAUD_BASE_URL
    key = client.mint_key(name="user_42", max_spend_usd=5)

`Client` blocks (releasing the GIL); `AsyncClient` has the same methods as
coroutines. Both wrap qlaud's Rust SDK. Answers are plain dicts, typed by the
`TypedDict`s in `qlaud.types`.
"""

from qlaud import _exceptions
from qlaud._exceptions import *  # noqa: F403 (their __all__)
from qlaud._qlaud import (
    DEFAULT_BASE_URL,
    AsyncClient,
    AsyncPager,
    AsyncStream,
    Client,
    Pager,
    Stream,
    __version__,
)

from qlaud import types

__all__ = [
    "Client",
    "AsyncClient",
    "Stream",
    "AsyncStream",
    "Pager",
    "AsyncPager",
    "DEFAULT_BASE_URL",
    "__version__",
    "types",
]
__all__ += _exceptions.__all__
