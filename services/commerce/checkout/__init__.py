"""The shop's synchronous checkout callbacks: member discounts WeChat Shop asks commerce about."""
