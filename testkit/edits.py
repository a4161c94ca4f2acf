"""Edits of an LLMDeployment body that the security and bad-input suites build their
hostile cases from: each returns a function that changes a body in place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Body = dict[str, Any]
Edit = Callable[[Body], None]


def ray_cluster_of(body: Body) -> Body:
    """spec.rayCluster, made empty if the body has none."""
    cluster: Body = body["spec"].setdefault("rayCluster", {})
    return cluster


def set_env(*entries: Body) -> Edit:
    def edit(body: Body) -> None:
        ray_cluster_of(body)["env"] = list(entries)

    return edit


def set_cluster(key: str, value: Any) -> Edit:
    def edit(body: Body) -> None:
        ray_cluster_of(body)[key] = value

    return edit


def set_source(source: str) -> Edit:
    def edit(body: Body) -> None:
        body["spec"]["model"]["source"] = source

    return edit


def set_cache(**fields: Any) -> Edit:
    def edit(body: Body) -> None:
        body["spec"].setdefault("storage", {}).setdefault("modelCache", {}).update(fields)

    return edit


def set_checkpoints(**fields: Any) -> Edit:
    def edit(body: Body) -> None:
        body["spec"].setdefault("storage", {}).setdefault("checkpoints", {}).update(fields)

    return edit


def set_name(name: str) -> Edit:
    def edit(body: Body) -> None:
        body["metadata"]["name"] = name

    return edit


def both(*edits: Edit) -> Edit:
    """The edits, in order."""

    def edit(body: Body) -> None:
        for one in edits:
            one(body)

    return edit
