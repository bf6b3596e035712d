"""Documented Discord limits, checked on every message body and command sync.

Checks return `Problem`s rather than raising so that the REST layer can both answer like Discord
(400 code 50035 with an `errors` tree) and record each broken limit for the test to assert on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import Problem
from .models import IS_COMPONENTS_V2, walk_components
from .records import UploadedFile

MiB = 1024 * 1024


@dataclass(frozen=True)
class DiscordLimits:
    content: int = 2000
    embeds: int = 10
    embed_total: int = 6000
    embed_title: int = 256
    embed_description: int = 4096
    embed_fields: int = 25
    field_name: int = 256
    field_value: int = 1024
    footer_text: int = 2048
    author_name: int = 256
    action_rows: int = 5
    row_buttons: int = 5
    custom_id: int = 100
    button_label: int = 80
    select_options: int = 25
    v2_components: int = 40
    files_per_message: int = 10
    attachment_size: int = 10 * MiB  # default per-file limit (guilds may raise it)
    request_size: int = 25 * MiB
    commands: int = 100
    context_menu_commands: int = 15
    command_options: int = 25
    command_choices: int = 25
    command_chars: int = 8000
    string_option_length: int = 6000
    modal_title: int = 45
    modal_rows: int = 5


def _too_long(path: tuple[str | int, ...], limit: int) -> Problem:
    return Problem(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")


def _required(path: tuple[str | int, ...]) -> Problem:
    return Problem(path, "BASE_TYPE_REQUIRED", "This field is required")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def check_message(payload: dict[str, Any], limits: DiscordLimits) -> list[Problem]:
    """Content, embed and component limits of one message create/edit body."""
    problems: list[Problem] = []
    content = payload.get("content")
    if content is not None:
        if not isinstance(content, str):
            problems.append(Problem(("content",), "BASE_TYPE_STRING", "Must be a string."))
        elif len(content) > limits.content:
            problems.append(_too_long(("content",), limits.content))
    problems += check_embeds(payload.get("embeds"), limits)
    flags = int(payload.get("flags") or 0)
    problems += check_components(payload.get("components"), limits, v2=bool(flags & IS_COMPONENTS_V2))
    if flags & IS_COMPONENTS_V2 and (payload.get("content") or payload.get("embeds")):
        problems.append(
            Problem(
                ("content",),
                "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
                "The 'content' and 'embeds' fields cannot be used when using MessageFlags.IS_COMPONENTS_V2",
            )
        )
    attachments = payload.get("attachments")
    if isinstance(attachments, list) and len(attachments) > limits.files_per_message:
        problems.append(_too_long(("attachments",), limits.files_per_message))
    return problems


def check_embeds(embeds: Any, limits: DiscordLimits) -> list[Problem]:
    if embeds is None:
        return []
    if not isinstance(embeds, list):
        return [Problem(("embeds",), "BASE_TYPE_ARRAY", "Must be an array.")]
    problems: list[Problem] = []
    if len(embeds) > limits.embeds:
        problems.append(_too_long(("embeds",), limits.embeds))
    total = 0
    for i, embed in enumerate(embeds):
        if not isinstance(embed, dict):
            problems.append(Problem(("embeds", i), "DICT_TYPE_CONVERT", "Only dictionaries may be used."))
            continue
        checks: list[tuple[tuple[str | int, ...], str, int]] = [
            (("embeds", i, "title"), _text(embed.get("title")), limits.embed_title),
            (("embeds", i, "description"), _text(embed.get("description")), limits.embed_description),
            (
                ("embeds", i, "footer", "text"),
                _text((embed.get("footer") or {}).get("text")),
                limits.footer_text,
            ),
            (
                ("embeds", i, "author", "name"),
                _text((embed.get("author") or {}).get("name")),
                limits.author_name,
            ),
        ]
        fields = embed.get("fields") or []
        if len(fields) > limits.embed_fields:
            problems.append(_too_long(("embeds", i, "fields"), limits.embed_fields))
        for j, fld in enumerate(fields):
            name, value = _text(fld.get("name")), _text(fld.get("value"))
            if not name:
                problems.append(_required(("embeds", i, "fields", j, "name")))
            if not value:
                problems.append(_required(("embeds", i, "fields", j, "value")))
            checks.append((("embeds", i, "fields", j, "name"), name, limits.field_name))
            checks.append((("embeds", i, "fields", j, "value"), value, limits.field_value))
        for path, text, limit in checks:
            total += len(text)
            if len(text) > limit:
                problems.append(_too_long(path, limit))
    if total > limits.embed_total:
        problems.append(
            Problem(
                ("embeds",),
                "MAX_EMBED_SIZE_EXCEEDED",
                f"Embed size exceeds maximum size of {limits.embed_total}",
            )
        )
    return problems


_SELECTS = {3, 5, 6, 7, 8}


def check_components(components: Any, limits: DiscordLimits, *, v2: bool = False) -> list[Problem]:
    if components is None:
        return []
    if not isinstance(components, list):
        return [Problem(("components",), "BASE_TYPE_ARRAY", "Must be an array.")]
    problems: list[Problem] = []
    if v2:
        total = sum(1 for _ in walk_components(components))
        if total > limits.v2_components:
            problems.append(_too_long(("components",), limits.v2_components))
    else:
        if len(components) > limits.action_rows:
            problems.append(_too_long(("components",), limits.action_rows))
        for i, row in enumerate(components):
            if row.get("type") != 1:
                problems.append(
                    Problem(
                        ("components", i, "type"),
                        "UNION_TYPE_CHOICES",
                        'Value of field "type" must be one of (1,).',
                    )
                )
    for i, row in enumerate(components):
        if row.get("type") == 1:
            problems += _check_row(row, ("components", i), limits)
    for path, item in _items_with_paths(components, ("components",)):
        problems += _check_item(item, path, limits)
    seen: set[str] = set()
    for item in walk_components(components):
        custom_id = item.get("custom_id")
        if custom_id is None:
            continue
        if custom_id in seen:
            problems.append(
                Problem(
                    ("components",),
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    "Component custom id cannot be duplicated",
                )
            )
        seen.add(custom_id)
    return problems


def _items_with_paths(
    components: list[dict[str, Any]], path: tuple[str | int, ...]
) -> Iterable[tuple[tuple[str | int, ...], dict[str, Any]]]:
    for i, component in enumerate(components):
        here = (*path, i)
        yield here, component
        yield from _items_with_paths(list(component.get("components") or []), (*here, "components"))
        for key in ("accessory", "component"):
            if isinstance(component.get(key), dict):
                yield from _items_with_paths([component[key]], (*here, key))


def _check_row(row: dict[str, Any], path: tuple[str | int, ...], limits: DiscordLimits) -> list[Problem]:
    children = row.get("components") or []
    if not children:
        return [Problem((*path, "components"), "BASE_TYPE_MIN_LENGTH", "Must be 1 or more in length.")]
    selects = [c for c in children if c.get("type") in _SELECTS]
    if selects and len(children) > 1:
        return [
            Problem(
                (*path, "components"),
                "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                "The specified component exceeds the maximum width",
            )
        ]
    if len(children) > limits.row_buttons:
        return [_too_long((*path, "components"), limits.row_buttons)]
    return []


def _check_item(item: dict[str, Any], path: tuple[str | int, ...], limits: DiscordLimits) -> list[Problem]:
    problems: list[Problem] = []
    kind = item.get("type")
    custom_id = item.get("custom_id")
    needs_custom_id = kind in _SELECTS or (kind == 2 and item.get("style") in (1, 2, 3, 4))
    if needs_custom_id:
        if not isinstance(custom_id, str) or not custom_id:
            problems.append(_required((*path, "custom_id")))
        elif len(custom_id) > limits.custom_id:
            problems.append(_too_long((*path, "custom_id"), limits.custom_id))
    if kind == 2:
        style = item.get("style")
        if style not in (1, 2, 3, 4, 5, 6):
            problems.append(
                Problem((*path, "style"), "BASE_TYPE_CHOICES", "Value must be one of {1, 2, 3, 4, 5, 6}.")
            )
        if style == 5 and (not item.get("url") or custom_id is not None):
            problems.append(Problem((*path, "url"), "BUTTON_COMPONENT_URL_REQUIRED", "A URL is required"))
        label = item.get("label")
        if isinstance(label, str) and len(label) > limits.button_label:
            problems.append(_too_long((*path, "label"), limits.button_label))
        if not label and not item.get("emoji") and style != 6:
            problems.append(
                Problem(
                    (*path, "label"),
                    "BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED",
                    "A label or emoji is required",
                )
            )
    if kind == 3:
        options = item.get("options") or []
        if not options:
            problems.append(
                Problem((*path, "options"), "BASE_TYPE_MIN_LENGTH", "Must be 1 or more in length.")
            )
        if len(options) > limits.select_options:
            problems.append(_too_long((*path, "options"), limits.select_options))
    return problems


def is_empty_message(payload: dict[str, Any], files: Sequence[UploadedFile]) -> bool:
    """Discord refuses (code 50006) a new message with nothing to show."""
    return not (
        payload.get("content")
        or payload.get("embeds")
        or payload.get("components")
        or payload.get("sticker_ids")
        or payload.get("poll")
        or files
    )


def check_files(files: Sequence[UploadedFile], attachment_limit: int, limits: DiscordLimits) -> list[Problem]:
    """Upload sizes; any problem here is answered with 413 code 40005, as Discord does."""
    problems: list[Problem] = []
    for upload in files:
        if upload.size > attachment_limit:
            problems.append(
                Problem(
                    ("files", upload.index),
                    "FILE_TOO_LARGE",
                    f"{upload.filename} is {upload.size} bytes; the limit is {attachment_limit}",
                )
            )
    total = sum(upload.size for upload in files)
    if total > limits.request_size:
        problems.append(
            Problem(
                ("files",),
                "REQUEST_TOO_LARGE",
                f"request carries {total} bytes of files; the limit is {limits.request_size}",
            )
        )
    if len(files) > limits.files_per_message:
        problems.append(_too_long(("files",), limits.files_per_message))
    return problems


# --- application commands -------------------------------------------------------------------------

_NAME = re.compile(r"^[-_'\w]{1,32}$")
_SUBCOMMAND, _GROUP = 1, 2


def check_commands(commands: Any, limits: DiscordLimits) -> list[Problem]:
    """A bulk overwrite body (discord-api-docs interactions/application-commands)."""
    if not isinstance(commands, list):
        return [Problem((), "BASE_TYPE_ARRAY", "Must be an array.")]
    problems: list[Problem] = []
    by_type: dict[int, int] = {}
    seen: set[tuple[int, str]] = set()
    for i, command in enumerate(commands):
        kind = int(command.get("type", 1))
        by_type[kind] = by_type.get(kind, 0) + 1
        key = (kind, str(command.get("name")))
        if key in seen:
            problems.append(
                Problem(
                    (i, "name"),
                    "APPLICATION_COMMANDS_DUPLICATE_NAME",
                    f"Application command names must be unique ({key[1]})",
                )
            )
        seen.add(key)
        problems += check_command(command, (i,), limits)
    if by_type.get(1, 0) > limits.commands:
        problems.append(_too_long((), limits.commands))
    for kind in (2, 3):
        if by_type.get(kind, 0) > limits.context_menu_commands:
            problems.append(_too_long((), limits.context_menu_commands))
    return problems


def check_command(
    command: dict[str, Any], path: tuple[str | int, ...], limits: DiscordLimits
) -> list[Problem]:
    problems: list[Problem] = []
    kind = int(command.get("type", 1))
    name = command.get("name")
    description = command.get("description", "")
    if kind == 1:
        problems += _check_name(name, (*path, "name"))
        problems += _check_description(description, (*path, "description"))
        options = command.get("options") or []
        problems += _check_options(options, (*path, "options"), limits, depth=0)
        if _command_chars(command) > limits.command_chars:
            problems.append(
                Problem(
                    path,
                    "APPLICATION_COMMAND_TOO_LARGE",
                    f"Command exceeds maximum size ({limits.command_chars})",
                )
            )
    else:
        if not isinstance(name, str) or not 1 <= len(name) <= 32:
            problems.append(
                Problem((*path, "name"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")
            )
        if description:
            problems.append(
                Problem(
                    (*path, "description"),
                    "CONTEXT_MENU_DESCRIPTION",
                    "Context menu commands cannot have a description",
                )
            )
        if command.get("options"):
            problems.append(
                Problem(
                    (*path, "options"), "CONTEXT_MENU_OPTIONS", "Context menu commands cannot have options"
                )
            )
    return problems


def _check_name(name: Any, path: tuple[str | int, ...]) -> list[Problem]:
    if not isinstance(name, str) or not _NAME.match(name) or name != name.lower():
        return [Problem(path, "APPLICATION_COMMAND_INVALID_NAME", f"Command name is invalid: {name!r}")]
    return []


def _check_description(description: Any, path: tuple[str | int, ...]) -> list[Problem]:
    if not isinstance(description, str) or not 1 <= len(description) <= 100:
        return [Problem(path, "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")]
    return []


def _check_options(
    options: list[dict[str, Any]], path: tuple[str | int, ...], limits: DiscordLimits, depth: int
) -> list[Problem]:
    problems: list[Problem] = []
    if len(options) > limits.command_options:
        problems.append(_too_long(path, limits.command_options))
    kinds = {int(o.get("type", 0)) for o in options}
    nested = kinds & {_SUBCOMMAND, _GROUP}
    if nested and kinds - nested:
        problems.append(
            Problem(
                path,
                "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                "Sub-commands cannot be mixed with other options",
            )
        )
    names: set[str] = set()
    optional_seen = False
    for i, option in enumerate(options):
        here = (*path, i)
        kind = int(option.get("type", 0))
        problems += _check_name(option.get("name"), (*here, "name"))
        problems += _check_description(option.get("description"), (*here, "description"))
        if option.get("name") in names:
            problems.append(
                Problem(
                    (*here, "name"),
                    "APPLICATION_COMMAND_OPTIONS_DUPLICATE_NAME",
                    "Option names must be unique",
                )
            )
        names.add(str(option.get("name")))
        if (kind == _GROUP and depth > 0) or (kind == _SUBCOMMAND and depth > 1):
            problems.append(
                Problem(
                    (*here, "type"),
                    "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                    "Sub-command nesting is too deep",
                )
            )
        if kind in (_SUBCOMMAND, _GROUP):
            problems += _check_options(option.get("options") or [], (*here, "options"), limits, depth + 1)
            continue
        if option.get("required"):
            if optional_seen:
                problems.append(
                    Problem(
                        (*here, "required"),
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed before non-required options",
                    )
                )
        else:
            optional_seen = True
        choices = option.get("choices") or []
        if len(choices) > limits.command_choices:
            problems.append(_too_long((*here, "choices"), limits.command_choices))
        for key in ("min_length", "max_length"):
            value = option.get(key)
            if value is not None and not 0 <= int(value) <= limits.string_option_length:
                problems.append(
                    Problem(
                        (*here, key),
                        "NUMBER_TYPE_MAX",
                        f"int value should be less than or equal to {limits.string_option_length}.",
                    )
                )
    return problems


def _command_chars(command: dict[str, Any]) -> int:
    """Discord counts names, descriptions and choice names/values towards the 8000-character cap."""
    total = len(str(command.get("name", ""))) + len(str(command.get("description", "")))
    for option in command.get("options") or []:
        total += _command_chars(option)
        for choice in option.get("choices") or []:
            total += len(str(choice.get("name", ""))) + len(str(choice.get("value", "")))
    return total


def check_modal(data: dict[str, Any], limits: DiscordLimits) -> list[Problem]:
    problems: list[Problem] = []
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= limits.custom_id:
        problems.append(
            Problem(("data", "custom_id"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        )
    title = data.get("title")
    if not isinstance(title, str) or not 1 <= len(title) <= limits.modal_title:
        problems.append(
            Problem(
                ("data", "title"),
                "BASE_TYPE_BAD_LENGTH",
                f"Must be between 1 and {limits.modal_title} in length.",
            )
        )
    components = data.get("components") or []
    if not 1 <= len(components) <= limits.modal_rows:
        problems.append(
            Problem(
                ("data", "components"),
                "BASE_TYPE_BAD_LENGTH",
                f"Must be between 1 and {limits.modal_rows} in length.",
            )
        )
    return problems
