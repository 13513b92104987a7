from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

T = TypeVar("T", bound="AcrAccessToken")


@_attrs_define
class AcrAccessToken:
    """An access token. ACR answers `access_token` only (its lifetime is the JWT's `exp`); Docker token servers answer
    `token` and/or `access_token`, `expires_in` and `issued_at`.

        Attributes:
            access_token (str | Unset): The access token (OAuth2 name).
            token (str | Unset): The access token (Docker token protocol name).
            expires_in (int | Unset): Lifetime in seconds; 60 when absent.
            issued_at (str | Unset): RFC 3339 time of issue.
            refresh_token (str | Unset): A refresh token, when the server hands one out.
    """

    access_token: str | Unset = UNSET
    token: str | Unset = UNSET
    expires_in: int | Unset = UNSET
    issued_at: str | Unset = UNSET
    refresh_token: str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        access_token = self.access_token

        token = self.token

        expires_in = self.expires_in

        issued_at = self.issued_at

        refresh_token = self.refresh_token

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update({})
        if access_token is not UNSET:
            field_dict["access_token"] = access_token
        if token is not UNSET:
            field_dict["token"] = token
        if expires_in is not UNSET:
            field_dict["expires_in"] = expires_in
        if issued_at is not UNSET:
            field_dict["issued_at"] = issued_at
        if refresh_token is not UNSET:
            field_dict["refresh_token"] = refresh_token

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        access_token = d.pop("access_token", UNSET)

        token = d.pop("token", UNSET)

        expires_in = d.pop("expires_in", UNSET)

        issued_at = d.pop("issued_at", UNSET)

        refresh_token = d.pop("refresh_token", UNSET)

        acr_access_token = cls(
            access_token=access_token,
            token=token,
            expires_in=expires_in,
            issued_at=issued_at,
            refresh_token=refresh_token,
        )

        acr_access_token.additional_properties = d
        return acr_access_token

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
