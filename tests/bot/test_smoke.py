import time

from tests.bot.standin import button_labels


def test_imagine_smoke(discord_run):
    async def scenario(d):
        st = d.standin
        assert {c["name"] for c in st.commands} >= {"imagine", "reproduce", "vary"}
        t = time.time()
        it = await st.slash("imagine", prompt="a cat", count=4, steps=4)
        final = await st.wait_for(lambda: (m := st.original(it)) and m["attachments"] and m["components"] and m)
        print(time.time() - t, final["content"], button_labels(final))
        for c in st.calls:
            print(c.method, c.path, c.status, (c.payload or {}).get("content", "") if isinstance(c.payload, dict) else "")

    discord_run(scenario)
