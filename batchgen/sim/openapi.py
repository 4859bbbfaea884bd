"""The small but real OpenAPI 3.1 document served at ``GET /api/v1/openapi.json``."""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error_responses(*statuses: str) -> dict[str, Any]:
    content = {"application/json": {"schema": _ref("Error")}}
    return {status: {"description": "Error", "content": content} for status in statuses}


def _secured(scope: str) -> list[dict[str, list[str]]]:
    return [{"bearerAuth": [scope]}]


def openapi_document(server_url: str = "") -> dict[str, Any]:
    """The OpenAPI document of the endpoints batchgen uses."""
    task_response = {"content": {"application/json": {"schema": _ref("Task")}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Rivya Public API (batchgen simulator)",
            "version": "v1",
            "description": "Local stand-in for the Rivya Public API v1, as batchgen uses it.",
        },
        "servers": [{"url": server_url or "/"}],
        "paths": {
            "/api/v1/models": {
                "get": {
                    "summary": "List models",
                    "security": [],
                    "responses": {"200": {"description": "Model catalog"}},
                }
            },
            "/api/v1/files": {
                "post": {
                    "summary": "Upload one reference file",
                    "security": _secured("files:create"),
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["file", "kind"],
                                    "properties": {
                                        "file": {"type": "string", "format": "binary"},
                                        "kind": {"enum": ["image", "video", "audio"]},
                                        "model": {"type": "string"},
                                        "client_request_id": {"type": "string", "maxLength": 128},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": {
                            "description": "Stored",
                            "content": {"application/json": {"schema": _ref("File")}},
                        },
                        **_error_responses("400", "401", "403", "429"),
                    },
                }
            },
            "/api/v1/files/{fileId}": {
                "get": {
                    "summary": "File metadata",
                    "security": _secured("files:read"),
                    "parameters": [
                        {
                            "name": "fileId",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "File",
                            "content": {"application/json": {"schema": _ref("File")}},
                        },
                        **_error_responses("401", "403", "404", "429"),
                    },
                }
            },
            "/api/v1/generations": {
                "post": {
                    "summary": "Submit one asynchronous generation task",
                    "security": _secured("generations:create"),
                    "parameters": [
                        {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("GenerationRequest")}},
                    },
                    "responses": {
                        "202": {"description": "Accepted", **task_response},
                        "200": {"description": "Idempotent replay", **task_response},
                        **_error_responses("400", "401", "402", "403", "409", "429"),
                    },
                }
            },
            "/api/v1/generations/{taskId}": {
                "get": {
                    "summary": "Poll one task",
                    "security": _secured("generations:read"),
                    "parameters": [
                        {
                            "name": "taskId",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {"description": "Task", **task_response},
                        **_error_responses("401", "403", "404", "429"),
                    },
                }
            },
            "/api/v1/credits": {
                "get": {
                    "summary": "Account balance",
                    "security": _secured("credits:read"),
                    "responses": {
                        "200": {
                            "description": "Balance",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {"current_credits": {"type": "integer"}},
                                    }
                                }
                            },
                        },
                        **_error_responses("401", "403", "429"),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message", "requestId"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "requestId": {"type": "string"},
                            },
                        }
                    },
                },
                "GenerationRequest": {
                    "type": "object",
                    "required": ["model"],
                    "properties": {
                        "model": {"type": "string"},
                        "prompt": {"type": "string"},
                        "params": {"type": "object"},
                        "client_request_id": {"type": "string", "maxLength": 128},
                    },
                },
                "Task": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "status": {"enum": ["queued", "processing", "succeeded", "failed"]},
                        "model": {"type": "string"},
                        "reserved_credits": {"type": "integer"},
                        "final_credits": {"type": "integer"},
                        "created_at": {"type": "string", "format": "date-time"},
                        "updated_at": {"type": "string", "format": "date-time"},
                        "result": {
                            "type": ["object", "null"],
                            "properties": {
                                "primary_url": {"type": "string"},
                                "urls": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                        "error": {"type": ["object", "null"]},
                    },
                },
                "File": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "url": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "mimeType": {"type": "string"},
                        "size": {"type": "integer"},
                        "sha256": {"type": "string"},
                        "created_at": {"type": "string", "format": "date-time"},
                        "duration_token": {"type": ["string", "null"]},
                    },
                },
            },
        },
    }
