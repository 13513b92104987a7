from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

T = TypeVar("T", bound="AcrErrorInfo")


@_attrs_define
class AcrErrorInfo:
    """One error, such as `BLOB_UNKNOWN` or `UNAUTHORIZED`.

    Attributes:
        code (str | Unset): A machine-readable code: `BLOB_UNKNOWN`, `DIGEST_INVALID`, `NAME_UNKNOWN`, `UNAUTHORIZED`,
            `DENIED`, `TOOMANYREQUESTS`, ...
        message (str | Unset): A human-readable message.
        detail (Any | Unset): Unstructured details; any JSON value.
    """

    code: str | Unset = UNSET
    message: str | Unset = UNSET
    detail: Any | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        code = self.code

        message = self.message

        detail = self.detail

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update({})
        if code is not UNSET:
            field_dict["code"] = code
        if message is not UNSET:
            field_dict["message"] = message
        if detail is not UNSET:
            field_dict["detail"] = detail

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        code = d.pop("code", UNSET)

        message = d.pop("message", UNSET)

        detail = d.pop("detail", UNSET)

        acr_error_info = cls(
            code=code,
            message=message,
            detail=detail,
        )

        acr_error_info.additional_properties = d
        return acr_error_info

    @property
    def additional_keys(self) -> list[str]:
        return list(self.additional_properties.keys())

    def __getitem__(self, key: str) -> Any:
        return self.additional_properties[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.additional_properties[key] = value

    def __delitem__(self, key: str) -> None:
        del self.additional_properties[key]

    def __contains__(self, key: str) -> bool:
        return key in self.additional_properties
