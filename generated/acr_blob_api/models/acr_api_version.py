from enum import StrEnum


class AcrApiVersion(StrEnum):
    V2021_07_01 = "2021-07-01"

    def __str__(self) -> str:
        return str(self.value)
