module example.com/wechat-jwt-verify

go 1.19
