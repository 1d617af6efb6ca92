import qlaud

admin = qlaud.Client()  # reads QLAUD_API_KEY (an admin key) and QLAUD_BASE_URL
key = admin.mint_key(name="user_42", max_spend_usd=5)  # one key per end user

user = qlaud.Client(api_key=key["secret"])
reply = user.create_message(
    model="echo", max_tokens=64, messages=[{"role": "user", "content": "Hello!"}]
)
print(reply["content"][0]["text"])

usage = admin.get_usage(key_id=key["id"])
print(f"user_42 spent {usage['totals']['cost_micros']} micro-dollars")
