"""Messages to members: decided and recorded in one unit of work, sent to WeChat after its commit,
the result recorded in another."""
