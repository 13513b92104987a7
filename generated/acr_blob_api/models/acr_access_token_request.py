from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

T = TypeVar("T", bound="AcrAccessTokenRequest")


@_attrs_define
class AcrAccessTokenRequest:
    """The OAuth2 form of `POST /oauth2/token` (and of Docker token servers).

    Attributes:
        grant_type (str): `refresh_token` or `password`.
        service (str): The challenge's `service`.
        scope (str): The challenge's `scope`.
        refresh_token (str | Unset): With `grant_type=refresh_token`.
        username (str | Unset): With `grant_type=password`.
        password (str | Unset): With `grant_type=password`.
        client_id (str | Unset): Names the client to the token server.
    """

    grant_type: str
    service: str
    scope: str
    refresh_token: str | Unset = UNSET
    username: str | Unset = UNSET
    password: str | Unset = UNSET
    client_id: str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        grant_type = self.grant_type

        service = self.service

        scope = self.scope

        refresh_token = self.refresh_token

        username = self.username

        password = self.password

        client_id = self.client_id

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "grant_type": grant_type,
                "service": service,
                "scope": scope,
            }
        )
        if refresh_token is not UNSET:
            field_dict["refresh_token"] = refresh_token
        if username is not UNSET:
            field_dict["username"] = username
        if password is not UNSET:
            field_dict["password"] = password
        if client_id is not UNSET:
            field_dict["client_id"] = client_id

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        grant_type = d.pop("grant_type")

        service = d.pop("service")

        scope = d.pop("scope")

        refresh_token = d.pop("refresh_token", UNSET)

        username = d.pop("username", UNSET)

        password = d.pop("password", UNSET)

        client_id = d.pop("client_id", UNSET)

        acr_access_token_request = cls(
            grant_type=grant_type,
            service=service,
            scope=scope,
            refresh_token=refresh_token,
            username=username,
            password=password,
            client_id=client_id,
        )

        acr_access_token_request.additional_properties = d
        return acr_access_token_request

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
