"""Interaction callbacks and the interaction webhook (followups, @original edits), with Discord's deadlines.

- the initial callback must come within `interaction_timeout` (3 s) of the interaction, else 10062;
- only one initial callback, else 40060;
- the token serves followups/edits for `token_lifetime` (15 min), then 50027;
- followups and @original need an acknowledged interaction first (10015 / 10008).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ALREADY_ACKNOWLEDGED,
    INVALID_WEBHOOK_TOKEN,
    UNKNOWN_INTERACTION,
    UNKNOWN_MESSAGE,
    UNKNOWN_WEBHOOK,
    DiscordAPIError,
    Problem,
    invalid_form_body,
    not_found,
)
from .interactions import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    InteractionHandle,
)
from .limits import check_modal
from .messaging import announce, message_payload, record_problems, validate_message
from .models import EPHEMERAL, LOADING, FakeMessage
from .records import CallbackRecord, ErrorRecord
from .rest import Handler, Reply, RestApi, RestRequest

if TYPE_CHECKING:
    from .server import FakeDiscord

MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE, AUTOCOMPLETE_RESULT, MODAL = 4, 5, 6, 7, 8, 9
ALLOWED_CALLBACKS = {
    APPLICATION_COMMAND: {MESSAGE, DEFERRED_MESSAGE, MODAL},
    MESSAGE_COMPONENT: {MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE, MODAL},
    MODAL_SUBMIT: {MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE},
    AUTOCOMPLETE: {AUTOCOMPLETE_RESULT},
}
CHAT_INPUT_COMMAND_MESSAGE = 20


def register(api: RestApi) -> None:
    r = InteractionRoutes(api.fake)
    api.add("POST /interactions/{interaction_id}/{token}/callback", r.logged(r.callback), auth=False)
    api.add("POST /webhooks/{webhook_id}/{token}", r.logged(r.followup), auth=False)
    api.add("GET /webhooks/{webhook_id}/{token}/messages/{message_id}", r.logged(r.get_message), auth=False)
    api.add(
        "PATCH /webhooks/{webhook_id}/{token}/messages/{message_id}", r.logged(r.edit_message), auth=False
    )
    api.add(
        "DELETE /webhooks/{webhook_id}/{token}/messages/{message_id}", r.logged(r.delete_message), auth=False
    )


class InteractionRoutes:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake

    def _by_token(self, req: RestRequest) -> InteractionHandle | None:
        return self.fake.interactions_by_token.get(req.params["token"])

    def logged(self, handler: Handler) -> Handler:
        """Also file each refusal under its interaction, so a test can read `handle.errors`."""

        async def wrapped(req: RestRequest) -> Reply:
            try:
                return await handler(req)
            except DiscordAPIError as exc:
                handle = self._by_token(req)
                if handle is not None:
                    handle.errors.append(
                        ErrorRecord(req.method, req.path, exc.status, exc.code, exc.message, exc.errors)
                    )
                raise

        return wrapped

    # --- the initial response ---------------------------------------------------------------------

    async def callback(self, req: RestRequest) -> Reply:
        fake = self.fake
        handle = fake.interactions.get(
            int(req.params["interaction_id"]) if req.params["interaction_id"].isdigit() else -1
        )
        if handle is None or handle.token != req.params["token"]:
            raise not_found(UNKNOWN_INTERACTION, "Unknown interaction")
        body = req.body
        attempt = CallbackRecord(
            type=int(body.get("type", 0)),
            data=dict(body.get("data") or {}),
            files=req.files,
            status=0,
            at=fake.clock.now(),
        )
        handle.responses.append(attempt)
        try:
            reply = await self._respond(req, handle, attempt)
        except DiscordAPIError as exc:
            attempt.status, attempt.error_code = exc.status, exc.code
            raise
        attempt.status = 200 if req.flag("with_response") else 204
        return reply

    async def _respond(self, req: RestRequest, handle: InteractionHandle, attempt: CallbackRecord) -> Reply:
        fake, world = self.fake, self.fake.world
        if attempt.at - handle.created_at > fake.interaction_timeout:
            raise not_found(UNKNOWN_INTERACTION, "Unknown interaction")
        if handle.acknowledged:
            raise DiscordAPIError(400, ALREADY_ACKNOWLEDGED, "Interaction has already been acknowledged.")
        kind, data = attempt.type, attempt.data
        if kind not in ALLOWED_CALLBACKS.get(handle.type, set()):
            problem = Problem(
                ("type",),
                "INTERACTION_RESPONSE_TYPE_INVALID",
                f"Response type {kind} is not valid for interaction type {handle.type}",
            )
            record_problems(fake, req, [problem])
            raise invalid_form_body([problem])
        channel = world.channels[handle.channel_id]
        message: FakeMessage | None = None
        if kind == MESSAGE:
            validate_message(fake, req, data, req.files, channel, creating=True, prefix=("data",))
            message = self._new_message(handle, data, req, extra_flags=0)
        elif kind == DEFERRED_MESSAGE:
            # The "is thinking..." placeholder: an empty loading message that a followup/edit fills.
            flags = int(data.get("flags") or 0) & EPHEMERAL
            message = self._new_message(handle, {"flags": flags}, req, extra_flags=LOADING)
        elif kind in (DEFERRED_UPDATE, UPDATE_MESSAGE):
            if handle.source_message_id is None:
                raise DiscordAPIError(400, 50035, "This interaction has no message to update")
            message = world.messages[handle.source_message_id]
            handle.original_message_id = message.id
            if kind == UPDATE_MESSAGE:
                validate_message(fake, req, data, req.files, channel, creating=False, prefix=("data",))
                world.edit_message(message, data, req.files)
                announce(fake, "MESSAGE_UPDATE", message)
        elif kind == MODAL:
            problems = check_modal(data, fake.limits)
            if problems:
                record_problems(fake, req, problems)
                raise invalid_form_body(problems)
            handle.modal = data
        elif kind == AUTOCOMPLETE_RESULT and len(data.get("choices") or []) > 25:
            problem = Problem(("data", "choices"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            record_problems(fake, req, [problem])
            raise invalid_form_body([problem])
        attempt.message_id = message.id if message is not None else None
        if not req.flag("with_response"):
            return Reply(204)
        # The interaction callback response object (discord.py 2.5+ always asks with_response=1).
        interaction: dict[str, Any] = {"id": str(handle.id), "type": handle.type}
        resource: dict[str, Any] = {"type": kind}
        if message is not None:
            interaction.update(
                {
                    "response_message_id": str(message.id),
                    "response_message_loading": message.loading,
                    "response_message_ephemeral": message.ephemeral,
                }
            )
            resource["message"] = message_payload(fake, message)
        return Reply(200, {"interaction": interaction, "resource": resource})

    def _new_message(
        self, handle: InteractionHandle, data: dict[str, Any], req: RestRequest, *, extra_flags: int
    ) -> FakeMessage:
        fake, world = self.fake, self.fake.world
        message = world.create_message(
            channel=world.channels[handle.channel_id],
            author=world.bot,
            payload=data,
            uploads=req.files,
            route="callback",
            extra_flags=extra_flags,
            allow_ephemeral=True,
        )
        self._mark(handle, message)
        handle.original_message_id = message.id
        announce(fake, "MESSAGE_CREATE", message)
        return message

    def _mark(self, handle: InteractionHandle, message: FakeMessage) -> None:
        world = self.fake.world
        message.webhook_id = message.application_id = world.application_id
        message.interaction_id = handle.id
        message.type = CHAT_INPUT_COMMAND_MESSAGE if handle.type == APPLICATION_COMMAND else 0
        user = world.users[handle.user_id]
        metadata: dict[str, Any] = {
            "id": str(handle.id),
            "type": handle.type,
            "user": {
                "id": str(user.id),
                "username": user.username,
                "discriminator": "0",
                "global_name": user.global_name,
                "avatar": None,
            },
            "authorizing_integration_owners": {"0": str(handle.guild_id or 0)},
        }
        if handle.type == APPLICATION_COMMAND:
            metadata.update({"name": handle.name, "command_type": 1})
        if handle.source_message_id is not None:
            metadata["interacted_message_id"] = str(handle.source_message_id)
        if handle.original_message_id is not None and handle.original_message_id != message.id:
            metadata["original_response_message_id"] = str(handle.original_message_id)
        message.interaction_metadata = metadata

    # --- the interaction webhook ------------------------------------------------------------------

    def _handle(self, req: RestRequest) -> InteractionHandle:
        fake = self.fake
        if req.params["webhook_id"] != str(fake.world.application_id):
            raise not_found(UNKNOWN_WEBHOOK, "Unknown Webhook")
        handle = fake.interactions_by_token.get(req.params["token"])
        if (
            handle is None
            or handle.token_revoked
            or fake.clock.now() - handle.created_at > fake.token_lifetime
        ):
            raise DiscordAPIError(401, INVALID_WEBHOOK_TOKEN, "Invalid Webhook Token")
        return handle

    def _message(self, handle: InteractionHandle, message_id: str) -> FakeMessage:
        world = self.fake.world
        if message_id == "@original":
            message = handle.original
        else:
            mid = int(message_id) if message_id.isdigit() else -1
            ours = mid == handle.original_message_id or mid in handle.followup_ids
            message = world.messages.get(mid) if ours else None
        if message is None or message.deleted or not handle.acknowledged:
            raise not_found(UNKNOWN_MESSAGE, "Unknown Message")
        return message

    async def followup(self, req: RestRequest) -> Reply:
        fake, world = self.fake, self.fake.world
        handle = self._handle(req)
        if not handle.acknowledged:
            raise not_found(UNKNOWN_WEBHOOK, "Unknown Webhook")
        body = req.body
        channel = world.channels[handle.channel_id]
        validate_message(fake, req, body, req.files, channel, creating=True)
        original = handle.original
        if original is not None and original.loading and original.interaction_id == handle.id:
            # Discord's rule: the first followup after a deferral *becomes* the deferred message,
            # keeping the deferral's ephemerality whatever the followup asked for.
            world.edit_message(original, {**body, "flags": 0}, req.files, clear_flags=LOADING)
            message = original
            event = "MESSAGE_UPDATE"
        else:
            message = world.create_message(
                channel=channel,
                author=world.bot,
                payload=body,
                uploads=req.files,
                route="followup",
                allow_ephemeral=True,
            )
            self._mark(handle, message)
            event = "MESSAGE_CREATE"
        handle.followup_ids.append(message.id)
        world.changes.notify()
        announce(fake, event, message)
        if req.flag("wait"):
            return Reply(200, message_payload(fake, message))
        return Reply(204)

    async def get_message(self, req: RestRequest) -> Reply:
        handle = self._handle(req)
        return Reply(200, message_payload(self.fake, self._message(handle, req.params["message_id"])))

    async def edit_message(self, req: RestRequest) -> Reply:
        fake = self.fake
        handle = self._handle(req)
        message = self._message(handle, req.params["message_id"])
        body = req.body
        validate_message(fake, req, body, req.files, fake.world.channels[message.channel_id], creating=False)
        # Editing a deferred placeholder turns it into the real response.
        fake.world.edit_message(message, body, req.files, clear_flags=LOADING)
        announce(fake, "MESSAGE_UPDATE", message)
        return Reply(200, message_payload(fake, message))

    async def delete_message(self, req: RestRequest) -> Reply:
        fake = self.fake
        handle = self._handle(req)
        message = self._message(handle, req.params["message_id"])
        message.deleted = True
        fake.world.changes.notify()
        announce(fake, "MESSAGE_DELETE", message)
        return Reply(204)
