from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

T = TypeVar("T", bound="AcrRefreshTokenRequest")


@_attrs_define
class AcrRefreshTokenRequest:
    """The form of `POST /oauth2/exchange`.

    Attributes:
        grant_type (str): `access_token` to exchange an AAD access token.
        service (str): The registry's login server, the challenge's `service`.
        tenant (str | Unset): The AAD tenant of the access token.
        access_token (str | Unset): The AAD access token.
    """

    grant_type: str
    service: str
    tenant: str | Unset = UNSET
    access_token: str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        grant_type = self.grant_type

        service = self.service

        tenant = self.tenant

        access_token = self.access_token

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "grant_type": grant_type,
                "service": service,
            }
        )
        if tenant is not UNSET:
            field_dict["tenant"] = tenant
        if access_token is not UNSET:
            field_dict["access_token"] = access_token

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        grant_type = d.pop("grant_type")

        service = d.pop("service")

        tenant = d.pop("tenant", UNSET)

        access_token = d.pop("access_token", UNSET)

        acr_refresh_token_request = cls(
            grant_type=grant_type,
            service=service,
            tenant=tenant,
            access_token=access_token,
        )

        acr_refresh_token_request.additional_properties = d
        return acr_refresh_token_request

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
