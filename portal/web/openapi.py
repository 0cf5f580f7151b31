"""The OpenAPI 3 document of /api/v1, kept next to the implementation it describes."""

from __future__ import annotations

from typing import Any

ERROR = {"type": "object", "required": ["error", "details"],
         "properties": {"error": {"type": "string"}, "details": {}}}
REQUIREMENT = {"type": "object", "required": ["level", "key", "metric", "actual", "op", "required", "met", "window"],
               "properties": {"level": {"type": "string", "nullable": True}, "key": {"type": "string"},
                              "metric": {"type": "string"}, "actual": {"type": "number", "nullable": True},
                              "op": {"type": "string"}, "required": {"type": "number"}, "met": {"type": "boolean"},
                              "window": {"type": "string", "nullable": True}, "group": {"type": "string"},
                              "group_mode": {"type": "string"}, "value": {"type": "string"}}}
ITEM = {"type": "object", "required": ["id", "key", "state", "quantity"],
        "properties": {"id": {"type": "integer"}, "program": {"type": "string"}, "key": {"type": "string"},
                       "level": {"type": "string", "nullable": True}, "tier": {"type": "string"},
                       "mode": {"type": "string"},
                       "state": {"type": "string", "enum": ["available", "pending_review", "issued", "claimed",
                                                            "rejected", "expired", "revoked"]},
                       "quantity": {"type": "integer"}, "amount": {"type": "number", "nullable": True},
                       "value": {"type": "number", "nullable": True}, "due_on": {"type": "string", "format": "date"},
                       "issued_on": {"type": "string", "format": "date", "nullable": True},
                       "claimed_on": {"type": "string", "format": "date", "nullable": True},
                       "expires_on": {"type": "string", "format": "date", "nullable": True},
                       "review_note": {"type": "string", "nullable": True},
                       "granted_by": {"type": "string", "nullable": True},
                       "reason": {"type": "string", "nullable": True}}}
CHANGE = {"type": "object", "required": ["from", "to", "on", "reasons"],
          "properties": {"program": {"type": "string"}, "from": {"type": "string", "nullable": True},
                         "to": {"type": "string", "nullable": True}, "on": {"type": "string", "format": "date"},
                         "direction": {"type": "string"}, "cause": {"type": "string"},
                         "reasons": {"type": "array", "items": {"type": "object"}}}}
STANDING = {"type": "object",
            "required": ["member", "program", "as_of", "level", "rank", "sub_class", "category", "score", "status",
                         "requirements", "next_level", "reward_tasks_met", "last_change", "benefits"],
            "properties": {"member": {"type": "string"}, "program": {"type": "string"},
                           "as_of": {"type": "string", "format": "date", "nullable": True},
                           "level": {"type": "string", "nullable": True}, "rank": {"type": "integer", "nullable": True},
                           "sub_class": {"type": "string", "nullable": True},
                           "category": {"type": "string", "nullable": True},
                           "score": {"type": "number", "nullable": True},
                           "status": {"type": "string", "enum": ["active", "blacklisted"]},
                           "requirements": {"type": "array", "items": {"$ref": "#/components/schemas/Requirement"}},
                           "next_level": {"type": "string", "nullable": True},
                           "reward_tasks_met": {"type": "boolean", "nullable": True},
                           "last_change": {"allOf": [{"$ref": "#/components/schemas/Change"}], "nullable": True},
                           "benefits": {"type": "array", "items": {"$ref": "#/components/schemas/BenefitItem"}}}}
METRIC_ROW = {"type": "object", "required": ["member", "metric", "date", "value"], "additionalProperties": False,
              "properties": {"member": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_.@-]+$"},
                             "metric": {"type": "string", "minLength": 1, "maxLength": 64},
                             "date": {"type": "string", "format": "date"}, "value": {"type": "number"},
                             "kind": {"type": "string", "nullable": True}, "id": {"type": "string", "nullable": True}}}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


MEMBER = {"name": "member", "in": "path", "required": True, "schema": {"type": "string"}}
AUTH_ERRORS = {"401": _err("missing or invalid token"), "404": _err("unknown member, or not this token's member")}


def document() -> dict[str, Any]:
    ref = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731
    return {
        "openapi": "3.0.3",
        "info": {"title": "Portal API", "version": "1.0.0",
                 "description": "Levels, standings and benefits. Bearer tokens from `portal tokens create`."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": ERROR, "Requirement": REQUIREMENT, "BenefitItem": ITEM, "Change": CHANGE,
                        "Standing": STANDING, "MetricRow": METRIC_ROW},
        },
        "paths": {
            "/api/v1/members/{member}/standing": {"get": {
                "summary": "A member's standing: in one program (?program=) or all enrolled ones",
                "parameters": [MEMBER, {"name": "program", "in": "query", "required": False, "schema": {"type": "string"}}],
                "responses": {"200": _ok("the standing (an array without ?program=)",
                                         {"oneOf": [ref("Standing"), {"type": "array", "items": ref("Standing")}]}),
                              **AUTH_ERRORS}}},
            "/api/v1/members/{member}/history": {"get": {
                "summary": "Level changes, newest first", "parameters": [MEMBER],
                "responses": {"200": _ok("changes", {"type": "array", "items": ref("Change")}), **AUTH_ERRORS}}},
            "/api/v1/members/{member}/benefits": {"get": {
                "summary": "The member's benefit ledger", "parameters": [MEMBER],
                "responses": {"200": _ok("items", {"type": "array", "items": ref("BenefitItem")}), **AUTH_ERRORS}}},
            "/api/v1/members/{member}/benefits/{id}/claim": {"post": {
                "summary": "Claim an available item", "parameters": [
                    MEMBER, {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {"200": _ok("the claimed item", ref("BenefitItem")),
                              "409": _err("no longer available"), **AUTH_ERRORS}}},
            "/api/v1/metrics": {"post": {
                "summary": "Push metric rows (all-or-nothing; duplicates by id skipped). Staff tokens.",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["rows"], "additionalProperties": False,
                    "properties": {"rows": {"type": "array", "items": ref("MetricRow")}}}}}},
                "responses": {"200": _ok("counts", {"type": "object", "required": ["new", "duplicates"], "properties": {
                    "new": {"type": "integer"}, "duplicates": {"type": "integer"}}}),
                    "400": _err("not a JSON object"), "401": _err("missing or invalid token"),
                    "403": _err("not a staff token"), "422": _err("bad rows, each named by its index")}}},
            "/api/v1/members/{member}/grants": {"post": {
                "summary": "A manual reward (audited). Staff tokens.", "parameters": [MEMBER],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["benefit", "program", "reason"],
                    "properties": {"benefit": {"type": "string"}, "program": {"type": "string"},
                                   "reason": {"type": "string"}, "quantity": {"type": "integer", "minimum": 1},
                                   "amount": {"type": "number", "minimum": 0}}}}}},
                "responses": {"201": _ok("the issued item", ref("BenefitItem")), "400": _err("bad request"),
                              "403": _err("not a staff token"), "422": _err("missing or wrong fields"),
                              **AUTH_ERRORS}}},
            "/api/v1/members/{member}/override": {"post": {
                "summary": "Set and lock a level (or lift the lock with lift: true). Staff tokens, audited.",
                "parameters": [MEMBER],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["program", "reason"],
                    "properties": {"program": {"type": "string"}, "level": {"type": "string", "nullable": True},
                                   "until": {"type": "string", "format": "date"}, "lift": {"type": "boolean"},
                                   "reason": {"type": "string"}}}}}},
                "responses": {"200": _ok("the standing", ref("Standing")), "400": _err("bad request"),
                              "403": _err("not a staff token"), "409": _err("not evaluated yet, or not locked"),
                              "422": _err("missing or wrong fields"), **AUTH_ERRORS}}},
            "/api/v1/openapi.json": {"get": {"summary": "This document", "security": [],
                                             "responses": {"200": {"description": "OpenAPI 3 document"}}}},
        },
    }
