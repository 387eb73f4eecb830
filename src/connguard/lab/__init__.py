"""The lab: real throwaway servers and raw-socket client crowds that reproduce each cause."""
