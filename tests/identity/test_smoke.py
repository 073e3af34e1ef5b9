import pytest

pytestmark = pytest.mark.anyio

from tests.conftest import API, bearer, register


async def test_register_and_me(client):
    tokens = await register(client)
    response = await client.get(f"{API}/auth/me", headers=bearer(tokens))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 0 and body["data"]["username"] == "alice"
    assert isinstance(body["data"]["id"], str)
