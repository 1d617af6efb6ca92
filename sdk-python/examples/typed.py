"""Every kind of call, for `mypy --strict` (the test suite runs it too)."""

import asyncio
from decimal import Decimal

import qlaud
from qlaud.types import Key, KeyWithSecret, UsageReport


def sync_calls(admin: qlaud.Client) -> int:
    key: KeyWithSecret = admin.mint_key(
        name="typed", max_spend_usd=Decimal("2.50"), period="daily", metadata={"plan": "pro"}
    )
    same: Key = admin.get_key(key["id"])
    admin.update_key(key["id"], max_spend_usd=10.25)
    names = [k["name"] for k in admin.iter_keys(include_revoked=False)]
    user = qlaud.Client(api_key=key["secret"], max_retries=0, timeout=30.0)
    try:
        with user.create_chat_completion(
            model="echo", messages=[{"role": "user", "content": "hi"}], stream=True
        ) as stream:
            for chunk in stream:
                print(chunk.get("choices"))
    except qlaud.BudgetExceededError as e:
        print("over budget:", e.message, e.status)
    usage: UsageReport = admin.get_usage(key_id=same["id"])
    admin.revoke_key(key["id"])
    return usage["totals"]["cost_micros"] + len(names)


def either_way(user: qlaud.Client, stream: bool) -> str:
    answer = user.create_message(
        model="echo", max_tokens=16, messages=[{"role": "user", "content": "hi"}], stream=stream
    )
    if isinstance(answer, qlaud.Stream):
        return " ".join(str(event["type"]) for event in answer)
    return str(answer["content"][0]["text"])


async def async_calls(admin: qlaud.AsyncClient) -> None:
    keys = await asyncio.gather(*(admin.mint_key(name=f"u{i}") for i in range(3)))
    user = qlaud.AsyncClient(api_key=keys[0]["secret"])
    stream = await user.create_message(
        model="echo", max_tokens=16, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    async for event in stream:
        print(event["type"])
    async for key in admin.iter_keys(limit=2):
        print(key["status"])


if __name__ == "__main__":
    print(sync_calls(qlaud.Client()))
    user = qlaud.Client(api_key=qlaud.Client().mint_key(name="either")["secret"])
    print(either_way(user, True), either_way(user, False))
    asyncio.run(async_calls(qlaud.AsyncClient()))
