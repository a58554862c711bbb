"""A local stand-in for Discord's HTTP API and gateway, for driving the real discord.py client.

    standin = DiscordStandin()
    await standin.start()                 # aiohttp on 127.0.0.1; points discord.py at itself
    ... bot.start("token") ...
    interaction = await standin.slash("imagine", prompt="a cat")
    message = await standin.wait_message(lambda m: m["attachments"] and m["components"])
    await standin.click(message, "V1")
    await standin.stop()

It keeps what Discord would: every message (original responses, follow-ups, channel
messages, DMs) with its content, components and attachment bytes, and a log of every REST
call. Faults can be injected per route: `standin.fail("PATCH", r"/webhooks/", status=429)`.
What it had to get right is in /work/shared/notes/discord-standin.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import re
import time
from typing import Any, Callable

import discord
import discord.gateway
import discord.http
import yarl
from aiohttp import WSMsgType, web

DISCORD_EPOCH_MS = 1420070400000
BOT_TOKEN = "standin-bot-token"
CONTENT_MAX = 2000  # Discord's limit on a message's text


def snowflake(at: float | None = None, _counter=itertools.count(1)) -> str:
    """A Discord id whose timestamp is `at` (default now): discord.py reads created_at from it."""
    ms = int((time.time() if at is None else at) * 1000) - DISCORD_EPOCH_MS
    return str((ms << 22) | (next(_counter) % 4096))


def user(uid: str, name: str) -> dict[str, Any]:
    return {"id": uid, "username": name, "global_name": name, "discriminator": "0", "avatar": None, "bot": False}


@dataclasses.dataclass
class Upload:
    """A file a member attaches to a slash command's attachment option: Discord stores it on its CDN
    and sends the interaction its id, with size, content type and (for pictures) width and height."""

    data: bytes
    filename: str = "picture.png"
    content_type: str | None = "image/png"
    width: int | None = None  # None: read from the picture (what Discord does); 0: not stated
    height: int | None = None


@dataclasses.dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    payload: dict[str, Any] | None
    files: dict[str, bytes]
    status: int = 200
    at: float = dataclasses.field(default_factory=time.monotonic)


@dataclasses.dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: dict[str, Any]
    times: int
    headers: dict[str, str]


class DiscordStandin:
    """One application, one bot user, one guild with two text channels, any number of users."""

    def __init__(self, *, attachment_size_limit: int = 10 * 1024 * 1024, token: str = BOT_TOKEN):
        self.token = token
        self.attachment_size_limit = attachment_size_limit
        self.app_id = snowflake()
        self.bot_user = {**user(snowflake(), "Statuary"), "bot": True}
        self.guild_id = snowflake()
        self.channel_id = snowflake()
        self.other_channel_id = snowflake()
        self.calls: list[Call] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.attachments: dict[str, bytes] = {}
        self.originals: dict[str, str] = {}  # interaction token -> its original response's message id
        self.commands: list[dict[str, Any]] = []
        self.dm_channels: dict[str, str] = {}  # user id -> DM channel id
        self.identifies = 0
        self._token_channel: dict[str, str] = {}  # interaction token -> its channel
        self._token_clicked: dict[str, str] = {}  # component interaction token -> the clicked message
        self.autocompleted: dict[str, list[dict[str, Any]]] = {}  # autocomplete token -> the choices offered
        self.modals: dict[str, dict[str, Any]] = {}  # interaction token -> the modal it answered with
        self.faults: list[Fault] = []
        self._ws: web.WebSocketResponse | None = None
        self._seq = 0
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._saved: tuple[str, yarl.URL] | None = None
        self.url = ""

    # ---- life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        api = "/api/v10"
        r = app.router
        r.add_get(api + "/users/@me", self._users_me)
        r.add_get(api + "/oauth2/applications/@me", self._application)
        r.add_put(api + "/applications/{app}/commands", self._sync_commands)
        r.add_post(api + "/interactions/{iid}/{token}/callback", self._callback)
        r.add_post(api + "/webhooks/{app}/{token}", self._followup)
        r.add_get(api + "/webhooks/{app}/{token}/messages/{mid}", self._webhook_get)
        r.add_patch(api + "/webhooks/{app}/{token}/messages/{mid}", self._webhook_edit)
        r.add_delete(api + "/webhooks/{app}/{token}/messages/{mid}", self._webhook_delete)
        r.add_post(api + "/channels/{cid}/messages", self._channel_send)
        r.add_patch(api + "/channels/{cid}/messages/{mid}", self._channel_edit)
        r.add_delete(api + "/channels/{cid}/messages/{mid}", self._channel_delete)
        r.add_post(api + "/users/@me/channels", self._create_dm)
        r.add_get("/attachments/{aid}/{name}", self._attachment)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
        discord.http.Route.BASE = self.url + "/api/v10"
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"ws://127.0.0.1:{port}/gateway")

    async def stop(self) -> None:
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._saved is not None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved

    # ---- what tests call ---------------------------------------------------------------------------------

    async def _users_me(self, request: web.Request) -> web.Response:
        return self._json(self.bot_user)

    def fail(self, method: str, pattern: str, *, status: int = 429, times: int = 1, retry_after: float = 0.3,
             code: int = 0, message: str = "") -> None:
        """The next `times` calls matching method and path regex answer `status` (429: rate limited)."""
        if status == 429:
            body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
            headers = {"Via": "1.1 google", "Retry-After": str(retry_after), "X-RateLimit-Scope": "user"}
        else:
            body, headers = {"message": message or "error", "code": code}, {}
        self.faults.append(Fault(method, re.compile(pattern), status, body, times, headers))

    def member(self, uid: str, name: str, *, manage_guild: bool = False) -> dict[str, Any]:
        perms = discord.Permissions.text() | discord.Permissions(view_channel=True)
        if manage_guild:
            perms |= discord.Permissions(manage_guild=True)
        return {"user": user(uid, name), "roles": [], "flags": 0, "joined_at": "2024-01-01T00:00:00+00:00",
                "deaf": False, "mute": False, "permissions": str(perms.value), "nick": None}

    def _base_interaction(self, itype: int, uid: str, name: str, *, dm: bool, channel_id: str | None,
                          manage_guild: bool, created: float | None) -> dict[str, Any]:
        iid = snowflake(created)
        data: dict[str, Any] = {
            "id": iid, "application_id": self.app_id, "type": itype, "token": f"itoken-{iid}", "version": 1,
            "locale": "en-US", "entitlements": [], "authorizing_integration_owners": {"0": self.guild_id},
            "attachment_size_limit": self.attachment_size_limit,
            "app_permissions": str(discord.Permissions.text().value),
        }
        if dm:
            cid = self.dm_channels.setdefault(uid, snowflake())
            data.update(user=user(uid, name), channel_id=cid, context=1,
                        channel={"id": cid, "type": 1, "recipients": [user(uid, name)], "last_message_id": None})
        else:
            cid = channel_id or self.channel_id
            data.update(guild_id=self.guild_id, channel_id=cid, context=0, guild_locale="en-US",
                        member=self.member(uid, name, manage_guild=manage_guild),
                        channel={"id": cid, "type": 0, "name": "pictures", "position": 0, "guild_id": self.guild_id,
                                 "permission_overwrites": [], "nsfw": False, "parent_id": None})
        self._token_channel[data["token"]] = data["channel_id"]
        return data

    async def slash(self, name: str, *, user_id: str = "1001", user_name: str = "alice", dm: bool = False,
                    channel_id: str | None = None, manage_guild: bool = False, created: float | None = None,
                    subcommand: list[str] | None = None, **options: Any) -> dict[str, Any]:
        """Someone runs /name with options; returns the interaction sent."""
        command = next((c for c in self.commands if c["name"] == name), None)
        assert command is not None, f"/{name} was not synced (have {[c['name'] for c in self.commands]})"
        resolved: dict[str, dict[str, Any]] = {}
        for k, v in list(options.items()):
            if isinstance(v, Upload):
                resolved[k] = self._upload(v)
                options[k] = resolved[k]["id"]
        opts = [{"name": k, "type": 11 if k in resolved else _option_type(v), "value": v}
                for k, v in options.items() if v is not None]
        for sub in reversed(subcommand or []):
            opts = [{"name": sub, "type": 1, "options": opts}]
        data = self._base_interaction(2, user_id, user_name, dm=dm, channel_id=channel_id,
                                      manage_guild=manage_guild, created=created)
        data["data"] = {"id": command["id"], "name": name, "type": 1, "options": opts}
        if resolved:
            data["data"]["resolved"] = {"attachments": {a["id"]: a for a in resolved.values()}}
        if not dm:
            data["data"]["guild_id"] = None
        await self.dispatch("INTERACTION_CREATE", data)
        return data

    def _upload(self, up: Upload) -> dict[str, Any]:
        """An attachment object for an upload (its bytes served at its url, like Discord's CDN)."""
        aid = snowflake()
        self.attachments[aid] = up.data
        width, height = up.width, up.height
        if width is None and (up.content_type or "").startswith("image/"):
            import io

            from PIL import Image

            try:
                with Image.open(io.BytesIO(up.data)) as im:
                    width, height = im.size
            except Exception:  # noqa: BLE001 -- not a picture: Discord states no size then
                width = height = None
        out = {"id": aid, "filename": up.filename, "size": len(up.data), "ephemeral": True,
               "url": f"{self.url}/attachments/{aid}/{up.filename}",
               "proxy_url": f"{self.url}/attachments/{aid}/{up.filename}"}
        if up.content_type:
            out["content_type"] = up.content_type
        if width and height:
            out["width"], out["height"] = width, height
        return out

    async def click(self, message: dict[str, Any], label: str, *, user_id: str = "1001", user_name: str = "alice",
                    created: float | None = None) -> dict[str, Any]:
        """Someone clicks the button labelled `label` (or with that custom_id) under `message`."""
        message = self.messages.get(message["id"], message)
        button = next((c for row in message.get("components", []) for c in row.get("components", [])
                       if c.get("label") == label or c.get("custom_id") == label), None)
        assert button is not None, f"no button {label!r} under message {message['id']}: {button_labels(message)}"
        dm = message["channel_id"] in self.dm_channels.values()
        data = self._base_interaction(3, user_id, user_name, dm=dm, channel_id=message["channel_id"],
                                      manage_guild=False, created=created)
        data["message"] = message
        self._token_clicked[data["token"]] = message["id"]
        data["data"] = {"custom_id": button["custom_id"], "component_type": 2}
        await self.dispatch("INTERACTION_CREATE", data)
        return data

    async def autocomplete(self, name: str, option: str, typed: str, *, user_id: str = "1001",
                           user_name: str = "alice", **options: Any) -> list[dict[str, Any]]:
        """Someone types `typed` into /name's `option` (other options already filled); returns the
        choices the bot offered ({"name", "value"} each)."""
        command = next((c for c in self.commands if c["name"] == name), None)
        assert command is not None, f"/{name} was not synced"
        opts = [{"name": k, "type": _option_type(v), "value": v} for k, v in options.items() if v is not None]
        opts.append({"name": option, "type": 3, "value": typed, "focused": True})
        data = self._base_interaction(4, user_id, user_name, dm=False, channel_id=None, manage_guild=False,
                                      created=None)
        data["data"] = {"id": command["id"], "name": name, "type": 1, "options": opts, "guild_id": None}
        await self.dispatch("INTERACTION_CREATE", data)
        return (await self.wait_for(lambda: (data["token"] in self.autocompleted,
                                             self.autocompleted.get(data["token"]))[0] and
                                    [self.autocompleted[data["token"]]]))[0]
    def modal(self, interaction: dict[str, Any]) -> dict[str, Any] | None:
        """The modal (title, custom_id, components) the bot opened in answer to `interaction`."""
        return self.modals.get(interaction["token"])

    @staticmethod
    def text_inputs(modal: dict[str, Any]) -> list[dict[str, Any]]:
        """A modal's text inputs, in order, whether in action rows (type 1) or labels (type 18)."""
        out = []
        for top in modal.get("components", []):
            inner = top.get("components") or ([top["component"]] if "component" in top else [top])
            out += [c for c in inner if c.get("type") == 4]
        return out

    async def submit_modal(self, interaction: dict[str, Any], values: dict[str, str] | None = None, *,
                           user_id: str = "1001", user_name: str = "alice") -> dict[str, Any]:
        """Someone submits the modal opened for `interaction`: each text input keeps its pre-filled
        value unless `values` (by label or custom_id) changes it. Like Discord's client, refuses to
        submit an empty required field or a value outside min/max length. Returns the interaction."""
        modal = self.modal(interaction)
        assert modal is not None, "no modal was opened for this interaction"
        values = dict(values or {})
        rows = []
        for ti in self.text_inputs(modal):
            value = values.pop(ti.get("label"), values.pop(ti["custom_id"], ti.get("value") or ""))
            assert not (ti.get("required", True) and not value), f"{ti.get('label')!r} is required"
            assert ti.get("min_length", 0) <= len(value) <= ti.get("max_length", 4000), ti.get("label")
            rows.append({"type": 1, "components": [{"type": 4, "custom_id": ti["custom_id"], "value": value}]})
        assert not values, f"the modal has no field {sorted(values)}"
        cid = self._token_channel.get(interaction["token"], self.channel_id)
        dm = cid in self.dm_channels.values()
        data = self._base_interaction(5, user_id, user_name, dm=dm, channel_id=cid, manage_guild=False, created=None)
        data["data"] = {"custom_id": modal["custom_id"], "components": rows}
        await self.dispatch("INTERACTION_CREATE", data)
        return data

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        assert self._ws is not None, "the bot is not connected"
        self._seq += 1
        await self._ws.send_str(json.dumps({"op": 0, "t": event, "s": self._seq, "d": data}))

    async def invalidate_session(self) -> None:
        """Discord drops the session: the client identifies again and gets a second READY."""
        assert self._ws is not None
        await self._ws.send_str(json.dumps({"op": 9, "d": False}))

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Wait until predicate() is truthy (checked after every request); return its value."""
        async def check():
            async with self._changed:
                while True:
                    value = predicate()
                    if value:
                        return value
                    try:  # woken by every request, and every 50 ms for predicates on the bot's state
                        await asyncio.wait_for(self._changed.wait(), 0.05)
                    except asyncio.TimeoutError:
                        pass

        return await asyncio.wait_for(check(), timeout)

    async def wait_message(self, predicate: Callable[[dict[str, Any]], Any], timeout: float = 30.0) -> dict[str, Any]:
        return await self.wait_for(lambda: next((m for m in reversed(list(self.messages.values()))
                                                 if predicate(m)), None), timeout)

    def original(self, interaction: dict[str, Any]) -> dict[str, Any] | None:
        mid = self.originals.get(interaction["token"])
        return self.messages.get(mid) if mid else None

    def calls_to(self, method: str, pattern: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and re.search(pattern, c.path)]

    def attachment_bytes(self, message: dict[str, Any], index: int = 0) -> bytes:
        return self.attachments[message["attachments"][index]["id"]]

    # ---- plumbing ----------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        if request.path.startswith("/api/"):
            auth = request.headers.get("Authorization", "")
            if not request.path.startswith(("/api/v10/interactions/", "/api/v10/webhooks/")) \
                    and auth != f"Bot {self.token}":
                return self._json({"message": "401: Unauthorized", "code": 0}, status=401)
            for fault in self.faults:
                if fault.times > 0 and fault.method == request.method and fault.pattern.search(request.path):
                    fault.times -= 1
                    await self._log(request, fault.status)
                    return self._json(fault.body, status=fault.status, headers=fault.headers)
        response = await handler(request)
        return response

    async def _log(self, request: web.Request, status: int, payload=None, files=None) -> None:
        self.calls.append(Call(request.method, request.path.removeprefix("/api/v10"), dict(request.query),
                               payload, files or {}, status))
        async with self._changed:
            self._changed.notify_all()

    async def _changed_now(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    @staticmethod
    def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        # discord.py parses JSON only when Content-Type is exactly application/json (no charset).
        return web.Response(body=json.dumps(data).encode(), status=status,
                            headers={"Content-Type": "application/json", **(headers or {})})

    async def _read(self, request: web.Request) -> tuple[dict[str, Any] | None, dict[str, bytes]]:
        ctype = request.headers.get("Content-Type", "")
        if ctype.startswith("multipart/"):
            form = await request.post()
            payload = json.loads(form["payload_json"]) if "payload_json" in form else {}
            files = {k: v.file.read() for k, v in form.items() if k.startswith("files[")}
            names = {k: v.filename for k, v in form.items() if k.startswith("files[")}
            payload["_filenames"] = names
            return payload, files
        body = await request.read()
        return (json.loads(body) if body else None), {}

    async def _application(self, request: web.Request) -> web.Response:
        return self._json({"id": self.app_id, "name": "Statuary", "description": "", "icon": None,
                           "bot_public": True, "bot_require_code_grant": False, "owner": user(snowflake(), "owner"),
                           "verify_key": "00", "flags": 0, "summary": "", "team": None})

    async def _sync_commands(self, request: web.Request) -> web.Response:
        payload, _ = await self._read(request)
        self.commands = [{**c, "id": snowflake(), "application_id": self.app_id, "version": snowflake(),
                          "default_member_permissions": c.get("default_member_permissions"),
                          "type": c.get("type", 1)} for c in payload]
        await self._log(request, 200, payload)
        return self._json(self.commands)

    # ---- messages ---------------------------------------------------------------------------------------

    def _new_message(self, channel_id: str, payload: dict[str, Any], files: dict[str, bytes], *,
                     webhook: bool, interaction: dict[str, Any] | None = None) -> dict[str, Any]:
        mid = snowflake()
        msg = {"id": mid, "channel_id": channel_id, "type": 0 if not interaction else 20, "content": "",
               "author": self.bot_user, "attachments": [], "embeds": [], "mentions": [], "mention_roles": [],
               "pinned": False, "mention_everyone": False, "tts": False, "flags": 0, "components": [],
               "timestamp": "2024-01-01T00:00:00+00:00", "edited_timestamp": None}
        if webhook:
            msg["webhook_id"] = self.app_id
            msg["application_id"] = self.app_id
        self._apply(msg, payload or {}, files)
        self.messages[mid] = msg
        return msg

    def _apply(self, msg: dict[str, Any], payload: dict[str, Any], files: dict[str, bytes]) -> None:
        names = payload.get("_filenames", {})
        for key in ("content", "components", "embeds"):
            if key in payload:
                msg[key] = payload[key] if payload[key] is not None else ([] if key != "content" else "")
        if "flags" in payload and payload["flags"] is not None:
            msg["flags"] = (msg.get("flags", 0) & ~128) | int(payload["flags"])
        else:
            msg["flags"] = msg.get("flags", 0) & ~128  # an edit ends 'thinking...'
        if "attachments" in payload or files:
            existing = {a["id"]: a for a in msg["attachments"]}
            new_list = []
            for item in payload.get("attachments", [{"id": i} for i in range(len(files))]):
                key = f"files[{item['id']}]"
                if key in files:
                    aid = snowflake()
                    data = files[key]
                    self.attachments[aid] = data
                    filename = item.get("filename") or names.get(key) or f"file{item['id']}"
                    new_list.append({"id": aid, "filename": filename, "size": len(data),
                                     "url": f"{self.url}/attachments/{aid}/{filename}",
                                     "proxy_url": f"{self.url}/attachments/{aid}/{filename}"})
                elif str(item["id"]) in existing:
                    new_list.append(existing[str(item["id"])])
            msg["attachments"] = new_list
        too_big = [a for a in msg["attachments"] if a["size"] > self.attachment_size_limit]
        msg["too_big"] = bool(too_big)

    def _check_size(self, files: dict[str, bytes], payload: dict[str, Any] | None = None) -> web.Response | None:
        if any(len(d) > self.attachment_size_limit for d in files.values()):
            return self._json({"message": "Request entity too large", "code": 40005}, status=413)
        content = ((payload or {}).get("data") or payload or {}).get("content") or ""
        if len(content) > CONTENT_MAX:  # Discord refuses the whole message: the user sees no answer
            return self._json({"message": "Invalid Form Body", "code": 50035, "errors": {"content": {"_errors": [
                {"code": "BASE_TYPE_MAX_LENGTH", "message": f"Must be {CONTENT_MAX} or fewer in length."}]}}},
                status=400)
        return None

    async def _callback(self, request: web.Request) -> web.Response:
        payload, files = await self._read(request)
        await self._log(request, 200, payload, files)
        if (bad := self._check_size(files, payload)) is not None:
            return bad
        iid, token = request.match_info["iid"], request.match_info["token"]
        rtype = payload["type"]
        data = payload.get("data") or {}
        channel_id = self._interaction_channel(token)
        message = None
        if rtype in (4, 5):  # a message, or 'thinking...' that later becomes one
            flags = int(data.get("flags") or 0) | (128 if rtype == 5 else 0)
            message = self._new_message(channel_id, {**data, "flags": flags}, files, webhook=True,
                                        interaction={"id": iid})
            self.originals[token] = message["id"]
        elif rtype == 8:  # autocomplete choices
            self.autocompleted[token] = list(data.get("choices") or [])
        elif rtype == 6 and token in self._token_clicked:  # deferred update: @original is the clicked message
            self.originals[token] = self._token_clicked[token]
        elif rtype == 9:  # open a modal: nothing is posted; the user sees a form
            assert data.get("custom_id") and data.get("title") and len(data["title"]) <= 45, data
            assert 1 <= len(self.text_inputs(data)) <= 5, data
            self.modals[token] = data
        elif rtype == 7:  # update the clicked message
            mid = self._token_clicked.get(token)
            if mid in self.messages:
                self._apply(self.messages[mid], data, files)
                message = self.messages[mid]
        await self._changed_now()
        return self._json({"interaction": {"id": iid, "type": 2, "response_message_id": message and message["id"],
                                           "response_message_loading": rtype == 5,
                                           "response_message_ephemeral": bool(int(data.get("flags") or 0) & 64)},
                           "resource": {"type": rtype, **({"message": message} if message else {})}})

    def _interaction_channel(self, token: str) -> str:
        return self._token_channel.get(token, self.channel_id)

    async def _followup(self, request: web.Request) -> web.Response:
        payload, files = await self._read(request)
        await self._log(request, 200, payload, files)
        if (bad := self._check_size(files, payload)) is not None:
            return bad
        token = request.match_info["token"]
        msg = self._new_message(self._interaction_channel(token), payload, files, webhook=True)
        await self._changed_now()
        return self._json(msg)

    def _webhook_message(self, request: web.Request) -> dict[str, Any] | None:
        mid = request.match_info["mid"]
        if mid == "@original":
            mid = self.originals.get(request.match_info["token"], "")
        return self.messages.get(mid)

    async def _webhook_get(self, request: web.Request) -> web.Response:
        await self._log(request, 200)
        msg = self._webhook_message(request)
        return self._json(msg) if msg else self._json({"message": "Unknown Message", "code": 10008}, status=404)

    async def _webhook_edit(self, request: web.Request) -> web.Response:
        payload, files = await self._read(request)
        msg = self._webhook_message(request)
        if msg is None:
            await self._log(request, 404, payload, files)
            return self._json({"message": "Unknown Message", "code": 10008}, status=404)
        await self._log(request, 200, payload, files)
        if (bad := self._check_size(files, payload)) is not None:
            return bad
        self._apply(msg, payload, files)
        msg["edited_timestamp"] = "2024-01-01T00:00:01+00:00"
        await self._changed_now()
        return self._json(msg)

    async def _webhook_delete(self, request: web.Request) -> web.Response:
        await self._log(request, 204)
        msg = self._webhook_message(request)
        if msg is None:
            return self._json({"message": "Unknown Message", "code": 10008}, status=404)
        self.messages.pop(msg["id"], None)
        await self._changed_now()
        return web.Response(status=204)

    async def _channel_send(self, request: web.Request) -> web.Response:
        payload, files = await self._read(request)
        await self._log(request, 200, payload, files)
        if (bad := self._check_size(files, payload)) is not None:
            return bad
        msg = self._new_message(request.match_info["cid"], payload, files, webhook=False)
        await self._changed_now()
        return self._json(msg)

    async def _channel_edit(self, request: web.Request) -> web.Response:
        payload, files = await self._read(request)
        msg = self.messages.get(request.match_info["mid"])
        if msg is None:
            await self._log(request, 404, payload, files)
            return self._json({"message": "Unknown Message", "code": 10008}, status=404)
        await self._log(request, 200, payload, files)
        if (bad := self._check_size(files, payload)) is not None:
            return bad
        self._apply(msg, payload, files)
        await self._changed_now()
        return self._json(msg)

    async def _channel_delete(self, request: web.Request) -> web.Response:
        await self._log(request, 204)
        if self.messages.pop(request.match_info["mid"], None) is None:
            return self._json({"message": "Unknown Message", "code": 10008}, status=404)
        await self._changed_now()
        return web.Response(status=204)

    async def _create_dm(self, request: web.Request) -> web.Response:
        payload, _ = await self._read(request)
        await self._log(request, 200, payload)
        uid = str(payload["recipient_id"])
        cid = self.dm_channels.setdefault(uid, snowflake())
        return self._json({"id": cid, "type": 1, "recipients": [user(uid, f"user{uid}")], "last_message_id": None})

    async def _attachment(self, request: web.Request) -> web.Response:
        data = self.attachments.get(request.match_info["aid"])
        await self._log(request, 200 if data is not None else 404)
        return web.Response(body=data) if data is not None else web.Response(status=404)

    # ---- gateway ---------------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 45000}}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            op = frame.get("op")
            if op == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif op == 2:
                self.identifies += 1
                if frame["d"].get("token") != self.token:
                    await ws.close(code=4004, message=b"Authentication failed.")
                    break
                self._seq = 0
                await self.dispatch("READY", {
                    "v": 10, "user": self.bot_user, "guilds": [], "session_id": f"session-{self.identifies}",
                    "resume_gateway_url": f"{self.url.replace('http', 'ws')}/gateway",
                    "application": {"id": self.app_id, "flags": 0}, "private_channels": [],
                    "relationships": [], "shard": [0, 1]})
            elif op == 6:  # resume: say the session is gone, so the client identifies anew
                await ws.send_str(json.dumps({"op": 9, "d": False}))
            await self._changed_now()
        return ws


def _option_type(value: Any) -> int:
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    return 3


def button_labels(message: dict[str, Any]) -> list[str]:
    return [c.get("label") for row in message.get("components", []) for c in row.get("components", [])]
