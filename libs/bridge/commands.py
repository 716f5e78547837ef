"""Commands by name: the handler, who may run it, and how its body is checked. No I/O.

A command is registered with ``App.command(name, description=..., access=...)`` (or
``@App.nexus.API``). Its handler is one of two kinds, told apart by its signature:

- **legacy** (QE's): ``async def f(specs)``, one positional parameter (named ``specs``,
  unannotated, or annotated ``APISpecs``). It gets the ``APISpecs`` and reads ``specs.body``
  itself; its schema says only "an object".
- **typed**: any other signature, e.g. ``async def resize(width: int, height: int = 100, *,
  specs)``. Every parameter but a keyword-only ``specs`` is an argument: the body must be an
  object whose keys are exactly those parameters (unknown keys are refused), each value
  valid for its annotation, as pydantic validates it (its lax mode, as FastAPI: ``"3"`` or
  ``3.0`` for an ``int`` is 3, ``3.5`` is refused). The handler is called with the
  validated values as keyword arguments (and ``specs=`` when it declares ``specs``). A bad
  body never reaches it: ``bind`` raises ``ProtocolError("bad-request", "width: Input
  should be a valid integer")``, naming each bad field.

Why signatures and not a schema written by hand: the parameters a handler reads are the
arguments of the command, so the check, the keyword arguments and the JSON Schema that
``commands`` and disco publish come from one definition and cannot disagree.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

import pydantic
from pydantic.fields import FieldInfo

from .access import Role
from .protocol import ProtocolError
from .specs import APISpecs

__all__ = ["MAX_NAME", "CommandRegistry", "CommandSpec", "LEGACY_SCHEMA"]

MAX_NAME: Final = 200
"""Longest command name (``cmd`` in a request is 1-200 characters)."""

LEGACY_SCHEMA: Final[dict[str, Any]] = {"type": "object"}
"""The schema of a legacy handler's body: any object."""

_SPECS = "specs"
_LEGACY_ANNOTATIONS = frozenset({"APISpecs", "NexusAPISpecs"})
_MAX_ERRORS = 5  # problems named in one bad-request message


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One registered command. ``access`` is the least trusted role that may run it;
    ``model`` checks a typed handler's body (None for legacy handlers); ``schema`` is the
    JSON Schema of the body as published; ``takes_specs`` says a typed handler wants
    ``specs=`` too."""

    name: str
    handler: Callable[..., Awaitable[Any]]
    description: str
    access: Role
    typed: bool
    model: type[pydantic.BaseModel] | None
    schema: dict[str, Any]
    takes_specs: bool = False
    _fields: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (model field, parameter)

    @classmethod
    def create(cls, name: str, handler: Callable[..., Awaitable[Any]], *, description: str | None = None,
               access: Role | str | None = None) -> CommandSpec:
        """The spec of ``handler`` under ``name``; ``TypeError`` saying what to change when
        the handler cannot be one (not ``async``, ``*args``/``**kwargs``, a parameter without
        annotation or with a type that JSON cannot carry), ``ValueError`` for a bad name or
        access."""
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            raise ValueError(f"a command name is a string of 1-{MAX_NAME} characters, not {name!r}")
        role = Role.USER if access is None else Role.parse(access)
        if not _is_async(handler):
            raise TypeError(f"the handler of {name!r} must be an async function: async def {name}(...): ...")
        if description is None:
            description = _first_line(handler)
        signature = inspect.signature(handler)
        if _is_legacy(signature):
            return cls(name, handler, description, role, False, None, dict(LEGACY_SCHEMA))
        return _typed(cls, name, handler, description, role)

    def allows(self, role: Role) -> bool:
        """Whether a caller of ``role`` may run this command."""
        return role.at_least(self.access)

    def bind(self, body: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments for the handler, validated; ``{}`` for a legacy handler
        (it gets ``specs``). Raises ``ProtocolError("bad-request", "field: problem; ...")``
        naming every bad, missing or unknown field (the first few)."""
        if self.model is None:
            return {}
        try:
            values = self.model.model_validate(body)
        except pydantic.ValidationError as exc:
            raise ProtocolError("bad-request", _problems(exc)) from None
        return {param: getattr(values, attr) for attr, param in self._fields}

    def call(self, specs: APISpecs) -> Awaitable[Any]:
        """Start the handler for ``specs`` (``bind`` first for a typed one: its
        ``ProtocolError`` comes out of this call, before the handler runs)."""
        if not self.typed:
            return self.handler(specs)
        kwargs = self.bind(specs.body)
        if self.takes_specs:
            kwargs[_SPECS] = specs
        return self.handler(**kwargs)

    def describe(self) -> dict[str, Any]:
        """What ``commands`` lists for this command."""
        return {"name": self.name, "description": self.description, "access": self.access.value,
                "schema": self.schema}


class CommandRegistry(Mapping[str, CommandSpec]):
    """The commands of one worker, by name (a read-only mapping; ``register`` adds or
    replaces). Names are case-sensitive, as ``cmd`` is."""

    def __init__(self) -> None:
        self._specs: dict[str, CommandSpec] = {}

    def register(self, name: str, handler: Callable[..., Awaitable[Any]], *, description: str | None = None,
                 access: Role | str | None = None) -> CommandSpec:
        """Make ``handler`` the command ``name`` (replacing an earlier one of that name).
        ``access``: ``"owner"`` (only the worker's own account), ``"partner"`` (and
        ``QE_ALLOW``), ``"user"`` or None (whoever the worker's policy admits). Raises as
        ``CommandSpec.create``."""
        spec = CommandSpec.create(name, handler, description=description, access=access)
        self._specs[name] = spec
        return spec

    def get(self, name: str, default: Any = None) -> Any:  # dict speed on the request path
        return self._specs.get(name, default)

    def __getitem__(self, name: str) -> CommandSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def visible_to(self, role: Role) -> list[CommandSpec]:
        """The commands a caller of ``role`` may run, by name."""
        return sorted((s for s in self._specs.values() if s.allows(role)), key=lambda s: s.name)

    def describe(self, role: Role) -> list[dict[str, Any]]:
        """``[{"name", "description", "access", "schema"}]`` of ``visible_to(role)``."""
        return [spec.describe() for spec in self.visible_to(role)]


# -- building a spec --------------------------------------------------------------------------


def _is_async(handler: Any) -> bool:
    """An ``async def`` function or method, or an object whose ``__call__`` is one."""
    call = type(handler).__call__ if callable(handler) else None
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


def _first_line(handler: Any) -> str:
    """The first line of a function's docstring (not of a callable object's class)."""
    doc = handler.__doc__ if inspect.isfunction(handler) or inspect.ismethod(handler) else None
    return inspect.cleandoc(doc).partition("\n")[0].strip() if doc else ""


def _is_legacy(signature: inspect.Signature) -> bool:
    """QE's ``async def f(specs)``: exactly one positional parameter without a default,
    named ``specs``, unannotated or annotated ``APISpecs``."""
    params = list(signature.parameters.values())
    if len(params) != 1:
        return False
    (param,) = params
    if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD) or param.default is not param.empty:
        return False
    annotation = param.annotation
    if param.name == _SPECS or annotation is param.empty or annotation is APISpecs:
        return True
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return text.rpartition(".")[2] in _LEGACY_ANNOTATIONS


def _typed(cls: type[CommandSpec], name: str, handler: Callable[..., Awaitable[Any]], description: str,
           access: Role) -> CommandSpec:
    what = f"the handler of {name!r}"
    try:
        signature = inspect.signature(handler, eval_str=True)
    except Exception as exc:  # NameError for an annotation only defined under TYPE_CHECKING, ...
        raise TypeError(f"{what}: cannot read the annotations of its parameters ({exc})") from exc
    fields: dict[str, Any] = {}
    names: list[tuple[str, str]] = []
    takes_specs = False
    for index, param in enumerate(signature.parameters.values()):
        if param.name == _SPECS:
            if param.kind is not param.KEYWORD_ONLY:
                raise TypeError(f"{what}: make 'specs' keyword-only (async def {name}(..., *, specs)) to get the "
                                "request's APISpecs next to typed arguments")
            takes_specs = True
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            stars = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise TypeError(f"{what}: {stars}{param.name} cannot be checked; name each argument")
        if param.kind is param.POSITIONAL_ONLY:
            raise TypeError(f"{what}: {param.name!r} is positional-only; arguments are passed by name")
        if param.annotation is param.empty:
            raise TypeError(f"{what}: parameter {param.name!r} needs a type annotation (e.g. {param.name}: int)")
        annotation = param.annotation
        default = param.default
        if isinstance(default, FieldInfo):  # x: int = Field(5, ge=0)
            annotation, default = Annotated[annotation, default], inspect.Parameter.empty
        attr = f"p{index}"  # the parameter's name is the alias: no clash with BaseModel's own names
        info = pydantic.Field(alias=param.name) if default is param.empty else pydantic.Field(default, alias=param.name)
        fields[attr] = (annotation, info)
        names.append((attr, param.name))
    try:
        model = pydantic.create_model(
            f"Arguments_{len(names)}",
            __config__=pydantic.ConfigDict(extra="forbid", title=name),
            **fields,
        )
        schema = model.model_json_schema()
    except (pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError, TypeError) as exc:
        raise TypeError(f"{what}: its parameters cannot be checked from JSON ({exc})") from exc
    return cls(name, handler, description, access, True, model, schema, takes_specs, tuple(names))


def _problems(exc: pydantic.ValidationError) -> str:
    """``field: problem; other.0: problem`` for the first few errors (the field as the caller
    wrote it, dotted for nested values)."""
    errors = exc.errors(include_url=False, include_input=False)
    parts = [f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}" for error in errors[:_MAX_ERRORS]]
    if len(errors) > _MAX_ERRORS:
        parts.append(f"and {len(errors) - _MAX_ERRORS} more")
    return "; ".join(parts)
