"""The mirror of Siyu tags on a service account's WeChat user tags, and conditional menus."""
