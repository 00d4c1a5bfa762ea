"""Course tooling (launch links, student copies, the static site): not lesson code; see Makefile."""
