"""What a member's watchdog may do through the service: `POST /api/v1/watchdog/ops`.

A member's watchdog runs on their machine, as them, with their HPC account; it holds no database
credential, only their token, and sends each of its typed operations here
(`labctl.access.servicedb.ServiceStore`). The body must be exactly one of the operations of
`labctl.stages.seam`, validated by its model (no field names of stored documents, no values
beyond what the model takes); the service carries it out in a `LocalStore` for the token's
owner, so that it concerns their jobs alone, changes only what a watchdog records, and moves a
job only as the state machine allows. A body that is not JSON is a 400; not an operation, a
422; an operation on a job not theirs, a 404; a state change the state machine refuses, a 409.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel

from labctl.access.servicedb import PATH
from labctl.db import Database
from labctl.stages.ops import AnyOp
from labctl.stages.seam import LocalStore, Op, results
from labctl.web.deps import ApiUser, state
from labctl.web.rest import _errors

router = APIRouter(prefix="/api/v1", responses=_errors(400, 401, 403, 404, 409, 422))


class Answer(BaseModel):
    """An operation's result, as its model (`Op[...]`) declares it."""

    result: Any = None


@router.post(PATH)
async def watchdog_op(request: Request, op: Annotated[AnyOp, Body()], user: ApiUser) -> Answer:
    """Carry out one operation of `user`'s watchdog, for `user` alone (see the module)."""
    web = state(request)

    def carry_out(db: Database) -> Any:
        chosen: Op[Any] = op
        done = LocalStore(db, web.config, user.username).run(chosen)
        return results(chosen).dump_python(done, mode="json")

    return Answer(result=await web.store.run(carry_out))
