"""Access control: signed tokens with roles, verified offline on every node (protocols/auth.md)."""

from .authority import ANONYMOUS as ANONYMOUS
from .authority import Authority as Authority
from .authority import Principal as Principal
from .authority import bearer_token as bearer_token
from .issuers import IssuerId as IssuerId
from .issuers import issuer_id_of as issuer_id_of
from .issuers import parse_issuer_id as parse_issuer_id
from .reasons import STATUS as STATUS
from .reasons import Reason as Reason
from .roles import Role as Role
from .tokens import TokenClaims as TokenClaims

__all__ = ["ANONYMOUS", "STATUS", "Authority", "IssuerId", "Principal", "Reason", "Role",
           "TokenClaims", "bearer_token", "issuer_id_of", "parse_issuer_id"]
